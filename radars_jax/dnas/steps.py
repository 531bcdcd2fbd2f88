"""DNAS inside one subspace: optimisers, train steps, evaluation.

Three modes (`config.dnas` and `config.method` pick one, see `dnas_mode`):
- `single_level` (Single-DARTS): one batch, one gradient for weights and
  alphas together.
- `first_order` (DARTS V1): an alpha step on a batch of the alpha half, then
  a weight step on a batch of the weight half.
- `second_order` (DARTS V2): the alpha step follows the unrolled objective
  L_val(w - xi * (dL_train/dw + wd * w), alpha) with xi the current weight
  learning rate; JAX differentiates through the inner gradient exactly (the
  Hessian-vector product DARTS approximates by finite differences).

Weights use SGD with momentum, cosine learning rate, weight decay and
gradient clipping; alphas use Adam with L2 decay (DARTS's settings), both
as optax transformations. State is a pytree (`DnasState`); the step is a
pure function compiled once per subspace (`DnasProgram`), or, on a switched
supernet (`radars_jax.nas.supernet`), once for every subspace of at most k ops
per choice point: the state then carries the subspace as `slots`, the
alphas have k entries per choice point (zero-padded), and only the weights
of the slotted ops (and those outside the choice points) are updated.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from radars_jax import data as data_lib
from radars_jax import memory as memory_lib
from radars_jax import parallel
from radars_jax import precision
from radars_jax.nas import supernet
from radars_jax.errors import UserError

MODES = ("single_level", "first_order", "second_order")
DNAS_METHODS = ("darts", "single_darts")   # methods that run one DNAS over the whole space
Batch = dict  # {"image": float32 [B, H, W, C], "label": int32 [B]}


def dnas_mode(config) -> str:
  """The DNAS mode a search runs: `single_darts` single-level, `darts` of
  `dnas.order`; inside each subspace of radars | rl | random,
  `dnas.inner_mode`."""
  if config.method == "single_darts":
    return "single_level"
  if config.method == "darts":
    return {1: "first_order", 2: "second_order"}[int(config.dnas.order)]
  return config.dnas.inner_mode


@flax.struct.dataclass
class DnasState:
  step: jax.Array
  weights: Any
  alphas: Any
  weight_opt_state: Any
  alpha_opt_state: Any
  slots: Any = None   # int32 [C, k] on a switched supernet, else None


def weight_schedule(dnas_config, total_steps: int) -> optax.Schedule:
  """Cosine from `weight_lr` to `weight_lr_min` over the run."""
  lr, lr_min = dnas_config.weight_lr, dnas_config.weight_lr_min
  return optax.cosine_decay_schedule(lr, max(int(total_steps), 1), alpha=lr_min / lr)


def weight_lr_at(dnas_config, total_steps: int, step: int) -> float:
  """`weight_schedule(dnas_config, total_steps)(step)` computed on the host
  (for logging: the optax schedule, called outside a program, would
  compile its few operations one by one)."""
  lr, lr_min = float(dnas_config.weight_lr), float(dnas_config.weight_lr_min)
  total = max(int(total_steps), 1)
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(int(step), total) / total))
  return lr_min + (lr - lr_min) * cosine


def weight_optimizer(dnas_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """DARTS: clip the gradient norm, add L2 weight decay, SGD with momentum."""
  return optax.chain(
      optax.clip_by_global_norm(dnas_config.grad_clip),
      optax.add_decayed_weights(dnas_config.weight_decay),
      optax.sgd(schedule, momentum=dnas_config.momentum))


def alpha_optimizer(dnas_config) -> optax.GradientTransformation:
  """DARTS: Adam on the alphas with L2 decay added to the gradient."""
  b1, b2 = dnas_config.alpha_betas
  return optax.chain(
      optax.add_decayed_weights(dnas_config.alpha_weight_decay),
      optax.adam(dnas_config.alpha_lr, b1=b1, b2=b2))


def loss_and_accuracy(model: nn.Module, weights, alphas, batch: Batch, slots=None):
  extra = {} if slots is None else {"slots": slots}   # (switched supernets only)
  logits = model.apply({"params": weights}, batch["image"], alphas, **extra)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  accuracy = (jnp.argmax(logits, -1) == batch["label"]).mean()
  return loss, accuracy


def unrolled_alpha_loss(model, alphas, weights, batch_w: Batch, batch_a: Batch,
                        xi, weight_decay, slots=None):
  """L_val(w', alpha) with w' = w - xi * (grad_w L_train(w, alpha) + wd * w)."""
  grad_w = jax.grad(lambda w: loss_and_accuracy(model, w, alphas, batch_w, slots)[0])(weights)
  unrolled = jax.tree_util.tree_map(lambda w, g: w - xi * (g + weight_decay * w),
                                    weights, grad_w)
  return loss_and_accuracy(model, unrolled, alphas, batch_a, slots)[0]


def make_train_step(model: nn.Module, mode: str, weight_tx, alpha_tx,
                    schedule: optax.Schedule, weight_decay: float,
                    update_mask: Callable | None = None,
                    with_train_alpha_grad: bool | None = None,
                    passes_in_loop: bool = False,
                    alpha_penalty: Callable | None = None,
                    compute_dtype: str | None = None) -> Callable:
  """The pure train step `(state, batch_w, batch_a) -> (state, metrics)`.

  `batch_a` is the alpha-half batch (bi-level modes); single-level ignores it.
  `update_mask(weights, slots)`: on a switched supernet, a tree of bools,
  False for weights of ops outside the slots; those keep their values (their
  gradient is 0, but weight decay would move them).

  `with_train_alpha_grad` (bi-level modes; default: on the CPU): the weight
  pass also takes the alpha gradient on the weight batch and reports its
  norm (`alpha_grad_norm_train`); it is never applied. Its cost is a few
  reductions, and it gives each op's output and each node's gradient a
  second consumer. Without it XLA's CPU fusion treats a node's gradient
  (the sum of its consumers' input gradients, hundreds of shifted slices)
  as cheap and recomputes it inside the backward pass of every op of every
  edge leaving the node. With it the first-order step on the CPU runs and
  compiles faster for slightly more bytes (docs/performance.md).

  `passes_in_loop` (first order only): the alpha pass and the weight pass
  are the two iterations of one `lax.scan` whose body takes the gradient
  of the weights and the alphas on its batch (the alpha half's, then the
  weight half's) and applies the alpha update in the first iteration only.
  XLA then compiles the network's forward and backward pass once instead
  of twice; each step also computes the alpha pass's weight gradient,
  which is dropped. Same state as without it (to float rounding, tested);
  the train alpha gradient is reported as with `with_train_alpha_grad`.
  Needs equal batch shapes for both halves.

  `alpha_penalty(alphas, slots)`: a term of the alphas alone added to the
  loss their gradient descends (the hardware objective's cost term,
  `radars_jax.radars.hardware.penalty_fn`); the reported loss leaves it out. Not with
  `passes_in_loop`.

  `compute_dtype`: the dtype the network computes in (`radars_jax.precision`:
  bfloat16 activations, float32 weights, optimiser states and loss; None:
  float32).
  """
  if mode not in MODES:
    raise ValueError(f"unknown DNAS mode {mode!r}")
  model = precision.in_dtype(model, compute_dtype)
  if with_train_alpha_grad is None:
    with_train_alpha_grad = jax.default_backend() == "cpu"
  with_train_alpha_grad = with_train_alpha_grad and mode != "single_level"
  if passes_in_loop and mode != "first_order":
    raise ValueError(f"passes_in_loop is for the first-order mode, not {mode!r}")
  if passes_in_loop and alpha_penalty is not None:
    raise ValueError("passes_in_loop takes no alpha_penalty")

  def penalised(grad_a, alphas, slots):
    if alpha_penalty is None:
      return grad_a
    extra = jax.grad(lambda a: alpha_penalty(a, slots))(alphas)
    return jax.tree_util.tree_map(jnp.add, grad_a, extra)

  def step(state: DnasState, batch_w: Batch, batch_a: Batch | None = None):
    weights, alphas, slots = state.weights, state.alphas, state.slots
    alpha_opt_state = state.alpha_opt_state
    extra = {}
    if mode == "single_level":
      (loss, acc), (grad_w, grad_a) = jax.value_and_grad(
          lambda w, a: loss_and_accuracy(model, w, a, batch_w, slots), argnums=(0, 1),
          has_aux=True)(weights, alphas)
      grad_a = penalised(grad_a, alphas, slots)
      alphas, alpha_opt_state = _apply_updates(alphas, grad_a, alpha_opt_state, alpha_tx)
    elif passes_in_loop:
      (loss, acc), grad_w, alphas, alpha_opt_state, grad_a_train = _first_order_passes_in_loop(
          model, alpha_tx, weights, alphas, alpha_opt_state, slots, batch_a, batch_w)
      extra["alpha_grad_norm_train"] = optax.tree.norm(grad_a_train)
    else:
      grad_a = _alpha_gradient(model, mode, schedule, weight_decay, state, batch_w, batch_a)
      grad_a = penalised(grad_a, alphas, slots)
      alphas, alpha_opt_state = _apply_updates(alphas, grad_a, alpha_opt_state, alpha_tx)
      (loss, acc), grad_w, extra = _weight_pass(model, weights, alphas, batch_w, slots,
                                                with_train_alpha_grad)
    keep = update_mask(weights, slots) if update_mask is not None and slots is not None else None
    weights, weight_opt_state = _apply_updates(weights, grad_w, state.weight_opt_state,
                                               weight_tx, keep)
    new_state = DnasState(state.step + 1, weights, alphas, weight_opt_state, alpha_opt_state,
                          slots)
    return new_state, {"loss": loss, "accuracy": acc, **extra}

  return step


def _apply_updates(params, grads, opt_state, tx, keep=None):
  """One optax update; where `keep` (a tree of bools) is False, none."""
  updates, opt_state = tx.update(grads, opt_state, params)
  if keep is not None:
    updates = jax.tree_util.tree_map(lambda u, k: jnp.where(k, u, 0.0), updates, keep)
  return optax.apply_updates(params, updates), opt_state


def _alpha_gradient(model: nn.Module, mode: str, schedule: optax.Schedule,
                    weight_decay: float, state: DnasState, batch_w: Batch, batch_a: Batch):
  """The bi-level alpha gradient on the alpha batch: at the current weights
  (first order), or through one unrolled weight step on the weight batch
  at the current learning rate (second order, `unrolled_alpha_loss`)."""
  weights, alphas, slots = state.weights, state.alphas, state.slots
  if mode == "first_order":
    return jax.grad(
        lambda a: loss_and_accuracy(model, weights, a, batch_a, slots)[0])(alphas)
  xi = schedule(state.step)
  return jax.grad(unrolled_alpha_loss, argnums=1)(
      model, alphas, weights, batch_w, batch_a, xi, weight_decay, slots)


def _weight_pass(model: nn.Module, weights, alphas, batch_w: Batch, slots,
                 with_train_alpha_grad: bool):
  """The bi-level weight pass on the weight batch at the updated alphas:
  ((loss, accuracy), weight gradient, extra metrics)."""
  train_loss = lambda w, a: loss_and_accuracy(model, w, a, batch_w, slots)
  if with_train_alpha_grad:
    # The train batch's alpha gradient as well, reported, never applied:
    # see `make_train_step`.
    (loss, acc), (grad_w, grad_a_train) = jax.value_and_grad(
        train_loss, argnums=(0, 1), has_aux=True)(weights, alphas)
    return (loss, acc), grad_w, {"alpha_grad_norm_train": optax.tree.norm(grad_a_train)}
  (loss, acc), grad_w = jax.value_and_grad(train_loss, has_aux=True)(weights, alphas)
  return (loss, acc), grad_w, {}


def _first_order_passes_in_loop(model: nn.Module, alpha_tx, weights, alphas, alpha_opt_state,
                                slots, batch_a: Batch, batch_w: Batch):
  """DARTS V1's two passes as one `lax.scan` (see `make_train_step`'s
  `passes_in_loop`): ((loss, accuracy), weight gradient, alphas, their
  optimiser state, the train batch's alpha gradient)."""
  shapes = [jax.tree_util.tree_map(jnp.shape, b) for b in (batch_a, batch_w)]
  if shapes[0] != shapes[1]:
    raise ValueError(f"passes_in_loop needs equal batch shapes for both halves, got {shapes}")
  batches = jax.tree_util.tree_map(lambda a, w: jnp.stack([a, w]), batch_a, batch_w)

  def one_pass(carry, inputs):
    alphas, alpha_opt_state = carry
    batch, is_alpha_pass = inputs
    (loss, acc), (grad_w, grad_a) = jax.value_and_grad(
        lambda w, a: loss_and_accuracy(model, w, a, batch, slots), argnums=(0, 1),
        has_aux=True)(weights, alphas)
    updated = _apply_updates(alphas, grad_a, alpha_opt_state, alpha_tx)
    carry = jax.tree_util.tree_map(lambda new, old: jnp.where(is_alpha_pass, new, old),
                                   updated, (alphas, alpha_opt_state))
    return carry, (loss, acc, grad_w, grad_a)

  (alphas, alpha_opt_state), (loss, acc, grad_w, grad_a) = jax.lax.scan(
      one_pass, (alphas, alpha_opt_state), (batches, jnp.array([True, False])))
  second = lambda tree: jax.tree_util.tree_map(lambda x: x[1], tree)
  return (loss[1], acc[1]), second(grad_w), alphas, alpha_opt_state, second(grad_a)


def make_batch_fn(split: data_lib.Split, batch_size: int, mean, std, *,
                  pad: int, flip: bool, sharding, stacked: bool = False) -> Callable:
  """Jitted `(key, step) -> batch`: the step's shuffled, augmented, normalised
  batch, gathered on device and sharded over the mesh. `stacked`: `key`
  holds one key per sample, and the batch one batch per sample (leading
  axis; for `DnasProgram.group_step`). A split on disk is read on the host
  (`imagenet.RecordSplit.batch_fn`), the same batch of the same indices."""
  if not isinstance(split, data_lib.DeviceSplit):
    return split.batch_fn(batch_size, mean, std, pad=pad, flip=flip, sharding=sharding,
                          stacked=stacked)
  num_examples = int(split.labels.shape[0])

  def gather(split, key, step):
    idx = data_lib.batch_indices(key, step, num_examples, batch_size)
    images = data_lib.normalise(split.images[idx], mean, std)
    images = data_lib.random_crop_and_flip(jax.random.fold_in(key, step), images, pad, flip)
    return {"image": images, "label": split.labels[idx]}

  batch_sharding = {"image": sharding, "label": sharding}
  if stacked:
    # (the same values as one call per key: the random draws are per key)
    gather = jax.vmap(gather, in_axes=(None, 0, None))
  gather_jit = jax.jit(gather, out_shardings=batch_sharding)
  return lambda key, step: gather_jit(split, key, step)


@dataclasses.dataclass
class CompiledStep:
  fn: Callable
  seconds: float
  bytes: int
  slots: int = 0   # k of a switched supernet's step (any subspace of <= k ops), 0: static
  ops: int = 0     # StableHLO operations of the program (`program_ops`)
  samples: int = 0   # samples trained at once (`DnasProgram.group_step`), 0: one


class ProgramTooLarge(UserError):
  """A train step with more operations than `dnas.max_program_ops`: it is
  refused before XLA compiles it, as a step over the memory budget is."""

  def __init__(self, ops: int, limit: int, estimated: bool = False):
    self.ops, self.limit, self.estimated = ops, limit, estimated
    super().__init__(
        f"the train step has {'about ' * estimated}{ops:,} XLA operations"
        f"{' (estimated from the programs compiled so far)' * estimated}, "
        f"more than dnas.max_program_ops="
        f"{limit:,} (XLA's compile time and memory grow faster than the program: "
        "docs/performance.md): make the supernet smaller (supernet.layers, the space's ops) "
        "or raise dnas.max_program_ops")


def program_ops(lowered) -> int:
  """StableHLO operations of a lowered program, those in the bodies of its
  loops and branches included: what XLA's compile time and host memory
  grow with (faster than linearly)."""
  return len(_STABLEHLO_OP.findall(lowered.as_text()))


_STABLEHLO_OP = re.compile(r"stablehlo\.[a-z_]+")


def bytes_only_compiler_options() -> dict | None:
  """XLA options for a program compiled only to read its bytes.

  On the CPU: no LLVM optimisation of the generated kernels, and XLA's
  older fusion emitters in place of its MLIR ones. XLA assigns buffers on
  the optimised HLO, before code generation, so the bytes are those of the
  step that runs, or a few hundred bytes more with the older emitters (64
  to 464 on the digits configs' steps, at most 1 KiB: tests/test_dnas.py),
  and the compile is faster; the kernels would run slower, so only
  programs that never run use it (docs/performance.md). Elsewhere None
  (the defaults): not measured on accelerators."""
  if jax.default_backend() == "cpu":
    return {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
  return None


class DnasProgram:
  """The supernet of one subspace (or a switched supernet: `owners` from
  `supernet.param_owners`) with its optimisers and compiled steps;
  `alpha_penalty`, `compute_dtype`: see `make_train_step`."""

  def __init__(self, model: nn.Module, mode: str, dnas_config, total_steps: int,
               mesh, mean, std, owners: dict | None = None,
               alpha_penalty: Callable | None = None, compute_dtype: str | None = None):
    self.model, self.mode, self.mesh = model, mode, mesh
    self.schedule = weight_schedule(dnas_config, total_steps)
    self.dnas_config, self.total_steps = dnas_config, total_steps
    self.weight_tx = weight_optimizer(dnas_config, self.schedule)
    self.alpha_tx = alpha_optimizer(dnas_config)
    mask = None
    if owners is not None:
      mask = lambda weights, slots: supernet.active_params(owners, weights, slots)
    self.step_fn = make_train_step(
        model, mode, self.weight_tx, self.alpha_tx, self.schedule, dnas_config.weight_decay,
        mask, passes_in_loop=mode == "first_order" and bool(dnas_config.passes_in_loop),
        alpha_penalty=alpha_penalty, compute_dtype=compute_dtype)
    self.mean, self.std = mean, std
    self.replicated = parallel.replicated(mesh)
    self.batch_sharding = parallel.batch_sharded(mesh)
    self._init_state = None

  def learning_rate(self, step: int) -> float:
    """The weight learning rate at `step`, on the host."""
    return weight_lr_at(self.dnas_config, self.total_steps, step)

  @property
  def bilevel(self) -> bool:
    return self.mode != "single_level"

  def initial_state(self, weights, alphas, slots=None) -> DnasState:
    return DnasState(jnp.zeros((), jnp.int32), weights, tuple(alphas),
                     self.weight_tx.init(weights), self.alpha_tx.init(tuple(alphas)),
                     None if slots is None else jnp.asarray(slots, jnp.int32))

  def init_state(self, weights, alphas, slots=None) -> DnasState:
    """Step 0 with fresh optimiser states, replicated over the mesh (one
    program: op by op, every new shape of an optimiser state would compile
    its own)."""
    if self._init_state is None:
      self._init_state = jax.jit(self.initial_state, out_shardings=self.replicated)
    return self._init_state(weights, tuple(alphas),
                            None if slots is None else np.asarray(slots, np.int32))

  def abstract_inputs(self, weights_shapes, alphas_shapes, batch_size: int, image_shape,
                      slots_shape=None):
    """ShapeDtypeStructs of the step's inputs, with their shardings."""
    state = jax.eval_shape(self.initial_state, weights_shapes, alphas_shapes, slots_shape)
    state = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), state)
    batch = {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32,
                                           sharding=self.batch_sharding),
             "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32,
                                           sharding=self.batch_sharding)}
    return state, batch, (batch if self.bilevel else None)

  def group_step(self, sample_mesh) -> Callable:
    """The jitted train step of one sample per row of `sample_mesh`
    (`parallel.make_sample_mesh`): state, batches and metrics stacked on a
    leading sample axis. Each row runs `step_fn` on its own sample,
    data-parallel over its `data` devices (`jax.shard_map`, manual over
    `sample` only), so each sample's numbers are those of its own step."""
    spec = P(parallel.SAMPLE_AXIS)

    def one_sample(state, batch_w, batch_a):
      first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
      out = self.step_fn(first(state), first(batch_w), first(batch_a))
      return jax.tree_util.tree_map(lambda x: x[None], out)

    mapped = jax.shard_map(one_sample, mesh=sample_mesh, in_specs=(spec, spec, spec),
                           out_specs=spec, axis_names={parallel.SAMPLE_AXIS})
    stacked = parallel.sample_sharded(sample_mesh)
    return jax.jit(mapped, donate_argnums=(0,), out_shardings=(stacked, stacked))

  def group_abstract_inputs(self, sample_mesh, *args):
    """`abstract_inputs(*args)` stacked for `group_step(sample_mesh)`: one
    entry per row of the mesh."""
    samples = sample_mesh.shape[parallel.SAMPLE_AXIS]
    state, batch_w, batch_a = self.abstract_inputs(*args)

    def stack(tree, sharding):
      return jax.tree_util.tree_map(
          lambda s: jax.ShapeDtypeStruct((samples, *s.shape), s.dtype, sharding=sharding), tree)

    batches = parallel.sample_batch_sharded(sample_mesh)
    return (stack(state, parallel.sample_sharded(sample_mesh)), stack(batch_w, batches),
            stack(batch_a, batches))

  def compile_train_step(self, state, batch_w, batch_a, bytes_only: bool = False
                         ) -> CompiledStep:
    """Ahead-of-time compile (arguments may be abstract): also measures the
    compile time and the bytes the step needs. `bytes_only`: the program is
    compiled only to read its bytes and will never run
    (`bytes_only_compiler_options`)."""
    jitted = jax.jit(self.step_fn, donate_argnums=(0,),
                     out_shardings=(self.replicated, self.replicated))
    return compile_ahead(jitted, (state, batch_w, batch_a), self.dnas_config.max_program_ops,
                         bytes_only)


def compile_ahead(jitted, args, max_program_ops: int | None,
                  bytes_only: bool = False) -> CompiledStep:
  """`jitted` lowered on `args` (abstract or not) and compiled, timed and
  its bytes read; refused (`ProgramTooLarge`) before XLA compiles it if it
  has more than `max_program_ops` operations (None or 0: no limit).
  `bytes_only`: compiled only to read its bytes (`bytes_only_compiler_options`)."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  ops = program_ops(lowered)
  if max_program_ops and ops > int(max_program_ops):
    raise ProgramTooLarge(ops, int(max_program_ops))
  compiled = lowered.compile(bytes_only_compiler_options() if bytes_only else None)
  seconds = time.perf_counter() - start
  return CompiledStep(compiled, seconds, memory_lib.compiled_bytes(compiled), ops=ops)


class Evaluator:
  """Accuracy and mean loss of a model over a whole split, data-parallel,
  one host transfer at the end: the search's scoring (`search_logits`) and
  the retrained network's test evaluation (`radars_jax.retrain.train`) both use it.

  `logits_fn(inputs, images) -> logits` applies the model to normalised
  images; `inputs` is the pytree `evaluate` is given. Every batch has the
  same shape: the last one overlaps the previous one, and the overlap is
  not counted twice (BatchNorm sees only real examples)."""

  def __init__(self, logits_fn: Callable, mesh, mean, std):
    self.mesh = mesh
    batch_sharding = parallel.batch_sharded(mesh)

    def score(inputs, images, labels, start, first_counted):
      images = jax.lax.with_sharding_constraint(images, batch_sharding)
      labels = jax.lax.with_sharding_constraint(labels, batch_sharding)
      logits = logits_fn(inputs, data_lib.normalise(images, mean, std))
      counted = (start + jnp.arange(labels.shape[0])) >= first_counted
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      correct = ((jnp.argmax(logits, -1) == labels) & counted).sum()
      return correct, jnp.where(counted, losses, 0.0).sum(), counted.sum()

    def eval_step(inputs, split: data_lib.DeviceSplit, start, first_counted, batch_size: int):
      images = jax.lax.dynamic_slice_in_dim(split.images, start, batch_size)
      labels = jax.lax.dynamic_slice_in_dim(split.labels, start, batch_size)
      return score(inputs, images, labels, start, first_counted)

    self._step = jax.jit(eval_step, static_argnums=(4,))
    self._score = jax.jit(score)
    self._compiled: dict = {}   # `_signature` -> `_step` compiled by `compile_ahead`

  def _signature(self, inputs, split: data_lib.DeviceSplit, batch_size: int) -> tuple:
    leaves, tree = jax.tree_util.tree_flatten((inputs, split))
    return (batch_size, tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves),
            tuple(x.sharding for x in jax.tree_util.tree_leaves(split)))

  def compile_ahead(self, inputs, split: data_lib.Split, batch_size: int) -> None:
    """Compiles the program `evaluate(inputs, split, batch_size)` runs on a
    split held on the devices, where `inputs` may be abstract (shapes and
    dtypes): a background thread can compile it before the first call,
    which then neither traces nor compiles. The program is `split`'s (its
    arrays where they are placed now); inputs of other shapes or dtypes,
    or another split's, compile their own on their first call."""
    if not isinstance(split, data_lib.DeviceSplit):
      return
    batch_size = parallel.largest_divisible(split.num_examples, batch_size, self.mesh)
    replicated = parallel.replicated(self.mesh)
    abstract = jax.tree_util.tree_map(   # (dtypes as `evaluate`'s device_put makes them)
        lambda x: jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype),
                                       sharding=replicated), inputs)
    compiled = self._step.lower(abstract, split, 0, 0, batch_size).compile()
    self._compiled[self._signature(abstract, split, batch_size)] = compiled

  def _batches(self, split: data_lib.Split, batch_size: int, inputs):
    """Each batch's `(correct, loss, counted)`: sliced on device, or read
    from disk with the evaluation transform."""
    n = split.num_examples
    if isinstance(split, data_lib.DeviceSplit):
      compiled = self._compiled.get(self._signature(inputs, split, batch_size))
      for start in range(0, n, batch_size):
        start = min(start, n - batch_size)
        yield start, (functools.partial(compiled, inputs, split, start) if compiled is not None
                      else functools.partial(self._step, inputs, split, start,
                                             batch_size=batch_size))
    else:
      for start, images, labels in split.eval_batches(batch_size,
                                                      parallel.batch_sharded(self.mesh)):
        yield start, functools.partial(self._score, inputs, images, labels, start)

  def evaluate(self, inputs, split: data_lib.Split, batch_size: int) -> dict:
    """`{"accuracy", "loss"}` over `split`, in batches of at most `batch_size`."""
    n = split.num_examples
    batch_size = parallel.largest_divisible(n, batch_size, self.mesh)
    # One placement for every call: inputs fresh from the host and inputs
    # out of a replicated program would otherwise compile the step twice.
    inputs = jax.device_put(inputs, parallel.replicated(self.mesh))
    scores, previous_end = [], 0
    for start, scored in self._batches(split, batch_size, inputs):
      scores.append(scored(previous_end))
      previous_end = start + batch_size
    # summed on the host in the batches' order, in their dtypes: the device's
    # sums, without a program for each addition
    correct = loss = counted = 0
    for c, l, k in jax.device_get(scores):
      correct, loss, counted = correct + c, loss + l, counted + k
    counted = max(int(counted), 1)
    return {"accuracy": float(correct) / counted, "loss": float(loss) / counted}


def search_logits(model: nn.Module, compute_dtype: str | None = None) -> Callable:
  """`Evaluator`'s `logits_fn` for a search supernet (or its derived
  network) computing in `compute_dtype` (`radars_jax.precision`): inputs
  `(weights, op_scales, slots)`, slots None unless the supernet is switched."""
  model = precision.in_dtype(model, compute_dtype)

  def logits(inputs, images):
    weights, op_scales, slots = inputs
    return model.apply({"params": weights}, images, op_scales=op_scales, slots=slots)

  return logits
