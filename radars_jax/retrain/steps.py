"""The pure, compiled part of retraining a genotype (`retrain.train` runs it):
the typed state, the spec every compiled function depends on, the init and
train step, the eval network's logits, and `program`, which jits them once
per (spec, mesh).

DARTS evaluation protocol (`TrainSpec`): SGD with momentum and weight decay,
a learning rate following a cosine from `lr` to `lr_min` over the epochs
(set per epoch, as in DARTS), gradient clipping, cutout, drop path ramped
linearly from 0 to `drop_path` over the epochs, an auxiliary head weighted
`auxiliary_weight`; for ImageNet also label smoothing and the weights'
moving average, tested in their place. Each step gathers its batch on
device from the step number (`data.batch_indices`; a dataset on disk is
read on the host by the same indices, `imagenet.RecordSplit`), and every
random draw is `fold_in(key, step)`, so that a step's result depends only
on the state: a run restored from a checkpoint ends with exactly the
weights of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from radars_jax import data as data_lib
from radars_jax.dnas import steps as dnas_lib
from radars_jax.retrain import networks
from radars_jax import parallel
from radars_jax import precision

# Streams folded into the run's key (then each folded with the step).
_INIT, _DATA, _AUGMENT, _DROP_PATH = 0, 1, 2, 3


# ---------------------------------------------------------------------------
# State, optimiser, schedules
# ---------------------------------------------------------------------------

@flax.struct.dataclass
class TrainState:
  """The run's state as one pytree: what the compiled step takes and returns,
  and what a checkpoint saves."""
  step: jax.Array          # int32 scalar: steps done
  params: Any
  batch_stats: Any
  opt_state: Any
  metrics: dict            # sums since the last log: loss, accuracy, count
  key: jax.Array           # the run's PRNG key (constant; steps fold into it)
  # the weights' exponential moving average, `{"params", "batch_stats"}`,
  # evaluated in their place (`TrainSpec.ema_decay`; {} when off)
  ema: Any = dataclasses.field(default_factory=dict)


def zero_metrics() -> dict:
  """The metric sums at the start of a log window (`TrainState.metrics`)."""
  return {"loss": jnp.zeros((), jnp.float32), "accuracy": jnp.zeros((), jnp.float32),
          "count": jnp.zeros((), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything the compiled steps depend on: hashable, so runs with equal
  specs in one process share their compiled programs (`program`)."""
  model: Any                   # a Flax module (hashable)
  image_shape: tuple[int, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_examples: int            # training examples
  batch_size: int
  steps_per_epoch: int
  epochs: int
  lr: float
  lr_min: float
  momentum: float
  weight_decay: float
  grad_clip: float
  drop_path: float             # 0: no drop path
  auxiliary_weight: float      # 0: no auxiliary loss
  crop_padding: int
  flip: bool
  cutout: int
  label_smoothing: float = 0.0
  ema_decay: float = 0.0       # 0: no weight averaging
  compute_dtype: str = "float32"   # radars_jax.precision

  @classmethod
  def from_config(cls, config, model, image_shape, num_examples: int, mean, std,
                  drop_path: float, auxiliary_weight: float):
    t = config.train
    n = int(num_examples)
    batch_size = int(t.batch_size)
    return cls(model, tuple(image_shape), tuple(mean), tuple(std),
               n, batch_size, n // batch_size, int(t.epochs), float(t.lr), float(t.lr_min),
               float(t.momentum), float(t.weight_decay), float(t.grad_clip),
               float(drop_path), float(auxiliary_weight),
               int(config.data.crop_padding), bool(config.data.flip),
               int(t.cutout), float(t.label_smoothing), float(t.ema_decay),
               precision.resolved(t.get("compute_dtype")))

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  def epoch_of(self, step):
    return step // self.steps_per_epoch

  def learning_rate(self, step):
    """DARTS: cosine annealing stepped per epoch, `lr` at epoch 0 towards
    `lr_min` at epoch `epochs`."""
    epoch = jnp.asarray(self.epoch_of(step), jnp.float32)
    return self.lr_min + 0.5 * (self.lr - self.lr_min) * (
        1 + jnp.cos(jnp.pi * epoch / self.epochs))

  def drop_prob(self, step):
    """DARTS: `drop_path * epoch / epochs`; None (static) when drop path is off."""
    if self.drop_path <= 0:
      return None
    return self.drop_path * jnp.asarray(self.epoch_of(step), jnp.float32) / self.epochs

  def optimizer(self) -> optax.GradientTransformation:
    """Clip the gradient norm, add L2 weight decay, SGD with momentum (DARTS)."""
    return optax.chain(
        optax.clip_by_global_norm(self.grad_clip),
        optax.add_decayed_weights(self.weight_decay),
        optax.sgd(self.learning_rate, momentum=self.momentum))


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

def make_init(spec: TrainSpec, tx) -> Callable:
  """`key -> TrainState` at step 0."""

  def init(key):
    x = jnp.zeros((1, *spec.image_shape), jnp.float32)
    init_key = jax.random.fold_in(key, _INIT)
    variables = spec.model.init({"params": init_key, networks.DROP_PATH_RNG: init_key}, x,
                                train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = {"params": params, "batch_stats": batch_stats} if spec.ema_decay > 0 else {}
    return TrainState(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params),
                      zero_metrics(), key, ema)

  return init


def _augment_keys(state: TrainState) -> tuple[jax.Array, jax.Array]:
  """The step's crop-and-flip key and cutout key."""
  return jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, _AUGMENT),
                                             state.step))


def data_key(key: jax.Array) -> jax.Array:
  """The key of the run's batch order (`data.batch_indices(data_key, step)`)."""
  return jax.random.fold_in(key, _DATA)


def make_retrain_step(spec: TrainSpec, tx, batch_sharding) -> tuple[Callable, Callable]:
  """`(state, split) -> state`: gathers and augments the step's batch on
  device (DARTS: crop, flip, then cutout), one SGD step, adds the loss and
  accuracy to `state.metrics`; and `(state, batch) -> state`, the same step
  on a batch read elsewhere (normalised, cropped and flipped:
  `imagenet.RecordSplit`). The weights-only step of a fixed network, with
  BatchNorm statistics, drop path, the auxiliary head, label smoothing and
  the weights' moving average; the search's step (weights and alphas) is
  `dnas.make_train_step`. The network computes in `spec.compute_dtype`
  (`radars_jax.precision`)."""
  model = precision.in_dtype(spec.model, spec.compute_dtype)

  def cross_entropy(logits, labels):
    if spec.label_smoothing <= 0:
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                  spec.label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()

  def step_on_batch(state: TrainState, batch: dict) -> TrainState:
    step = state.step
    images = data_lib.cutout(_augment_keys(state)[1], batch["image"], spec.cutout)
    images = jax.lax.with_sharding_constraint(images, batch_sharding)
    labels = jax.lax.with_sharding_constraint(batch["label"], batch_sharding)
    drop_key = jax.random.fold_in(jax.random.fold_in(state.key, _DROP_PATH), step)

    def loss_fn(params):
      (logits, aux_logits), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          drop_prob=spec.drop_prob(step), rngs={networks.DROP_PATH_RNG: drop_key},
          mutable=["batch_stats"])
      loss = cross_entropy(logits, labels)
      if aux_logits is not None and spec.auxiliary_weight > 0:
        loss = loss + spec.auxiliary_weight * cross_entropy(aux_logits, labels)
      accuracy = (jnp.argmax(logits, -1) == labels).mean()
      return loss, (accuracy, updates["batch_stats"])

    (loss, (accuracy, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if spec.ema_decay > 0:
      ema = optax.incremental_update({"params": params, "batch_stats": batch_stats}, ema,
                                     1.0 - spec.ema_decay)
    m = state.metrics
    metrics = {"loss": m["loss"] + loss, "accuracy": m["accuracy"] + accuracy,
               "count": m["count"] + 1}
    return state.replace(step=step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, metrics=metrics, ema=ema)

  def train_step(state: TrainState, split: data_lib.DeviceSplit) -> TrainState:
    idx = data_lib.batch_indices(data_key(state.key), state.step, spec.num_examples,
                                 spec.batch_size)
    images = data_lib.normalise(split.images[idx], spec.mean, spec.std)
    images = data_lib.random_crop_and_flip(_augment_keys(state)[0], images,
                                           spec.crop_padding, spec.flip)
    return step_on_batch(state, {"image": images, "label": split.labels[idx]})

  return train_step, step_on_batch


def evaluated_weights(state: TrainState) -> tuple[Any, Any]:
  """`(params, batch_stats)` a test evaluation uses: the moving average
  where there is one."""
  if state.ema:
    return state.ema["params"], state.ema["batch_stats"]
  return state.params, state.batch_stats


def eval_logits(model, compute_dtype: str | None = None) -> Callable:
  """`dnas.Evaluator`'s `logits_fn` for the eval network computing in
  `compute_dtype`: inputs `(params, batch_stats)`, running BatchNorm
  statistics, no auxiliary head."""
  model = precision.in_dtype(model, compute_dtype)

  def logits(inputs, images):
    params, batch_stats = inputs
    return model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)[0]

  return logits


@dataclasses.dataclass
class Program:
  """The jitted init, train step and evaluator of one `TrainSpec`."""
  tx: optax.GradientTransformation
  init: Callable
  train_step: Callable          # (state, device split) -> state
  train_on_batch: Callable      # (state, batch) -> state
  evaluator: dnas_lib.Evaluator


@functools.lru_cache(maxsize=4)
def program(spec: TrainSpec, mesh) -> Program:
  """Built once per (spec, mesh) in a process, so a resumed or repeated run
  in the same process (tests, notebooks) does not compile again."""
  replicated = parallel.replicated(mesh)
  tx = spec.optimizer()
  init = jax.jit(make_init(spec, tx), out_shardings=replicated)
  train_step, train_on_batch = (
      jax.jit(fn, donate_argnums=(0,), out_shardings=replicated)
      for fn in make_retrain_step(spec, tx, parallel.batch_sharded(mesh)))
  return Program(tx, init, train_step, train_on_batch,
                 dnas_lib.Evaluator(eval_logits(spec.model, spec.compute_dtype), mesh, spec.mean,
                                    spec.std))
