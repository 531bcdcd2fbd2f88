"""The differentiable search: data, one DNAS run in a subspace, scoring.

`run_search(config, workdir)` is what `python -m radars_jax.main` runs in
`mode=search` for `method=darts` and `method=single_darts`: one DNAS run
over the whole space (refused up front if its step does not fit
`memory_budget_gb`). The RADARS loop (`radars_jax.radars.loop`) calls the same
`Searcher.run_dnas` once per sampled subspace.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from radars_jax import checkpointing
from radars_jax import compile_clock
from radars_jax import config_check
from radars_jax import data as data_lib
from radars_jax import imagenet
from radars_jax.dnas import steps as dnas_lib
from radars_jax.dnas import switched as switched_lib
from radars_jax import memory as memory_lib
from radars_jax import metrics as metrics_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax import precision
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib
from radars_jax.nas import weight_pool as pool_lib
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import hardware
from radars_jax import report
from radars_jax.retrain import train
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from radars_jax.time_limit import (NO_LIMIT, TimeLimit, TimeLimitReached, Watchdog,
                                   seconds_before_stop, stopped_summary)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class SearchData:
  """The training split cut for search, on device (`data.DeviceSplit`) or
  on disk (`imagenet.RecordSplit`; `Split` is either).

  `weight_split` / `alpha_split`: the two halves of the training split
  (DARTS); `joint_split`: both (single-level); `holdout_split`: examples no
  search step trains on, used to score architectures (`val_accuracy`).
  """
  name: str
  image_shape: tuple[int, ...]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  weight_split: data_lib.Split
  alpha_split: data_lib.Split
  joint_split: data_lib.Split
  holdout_split: data_lib.Split


def load_search_data(data_config, mesh) -> SearchData:
  """The dataset's training split cut into the search's splits: on device
  (`data.DeviceSplit`), or on disk for the ImageNet family
  (`imagenet.RecordSplit`: the holdout is read with the evaluation
  transform)."""
  if imagenet.is_streamed(data_config.name):
    ds = imagenet.open_dataset(data_config)
    n, put = ds.train.num_examples, ds.train.subset
  else:
    ds = data_lib.load_dataset(data_config)
    n = len(ds.train_labels)
    put = lambda idx: data_lib.to_device(ds.train_images[idx], ds.train_labels[idx],
                                         parallel.replicated(mesh))
  holdout = int(data_config.holdout_size)
  if not 0 < holdout < n - 2:
    raise UserError(f"data.holdout_size={holdout} must be between 1 and {n - 3} "
                    f"(the {ds.name} training split has {n} examples)")
  order = np.random.RandomState(data_config.split_seed).permutation(n)
  hold, rest = order[:holdout], order[holdout:]
  half_a, half_b = data_lib.split_in_halves(len(rest), data_config.split_seed)
  idx_w, idx_a = rest[half_a], rest[half_b]
  return SearchData(ds.name, tuple(ds.image_shape), ds.num_classes, tuple(ds.mean),
                    tuple(ds.std), put(idx_w), put(idx_a),
                    put(np.concatenate([idx_w, idx_a])), put(hold))


# ---------------------------------------------------------------------------
# One DNAS run
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class DnasResult:
  subspace: spaces_lib.Subspace
  alphas: list[np.ndarray]
  weights: Any
  genotype: dict
  val_accuracy: float
  train_loss: float
  train_accuracy: float
  step_bytes: int
  compile_seconds: float
  steps: int


@jax.jit
def _data_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The keys of a DNAS run's weight and alpha batches, as one program (run
  eagerly, the split and the unpacking of its result compile one program
  each, on the critical path of a search's start)."""
  key_w, key_a = jax.random.split(jax.random.fold_in(key, 2))
  return key_w, key_a


class Searcher:
  """What every DNAS run of one search shares: config, mesh, data, space,
  the metric writer and the compile / memory bookkeeping."""

  def __init__(self, config, mesh, data: SearchData, space: spaces_lib.SearchSpace,
               writer: metrics_lib.MetricWriter | None = None, slot_orders=None,
               alpha_penalty=None, time_limit: TimeLimit = NO_LIMIT):
    """`slot_orders`: per choice point, its ops in the order the switched
    supernet's slots leave them out (`cost_model.CostModel.slot_orders`;
    the RADARS loop's shared programs). `alpha_penalty(alphas, subspace,
    slots)`: a term of the alphas added to every DNAS loss
    (`radars_jax.radars.hardware.penalty_fn`). `time_limit`: checked at
    every log step of a DNAS run, which past it checkpoints and raises
    `TimeLimitReached`."""
    self.config, self.mesh, self.data, self.space = config, mesh, data, space
    self.time_limit = time_limit
    self.writer = writer or metrics_lib.MetricWriter(None)
    self.mode = dnas_lib.dnas_mode(config)
    self.batch_size = int(config.data.batch_size)
    parallel.check_divisible(self.batch_size, mesh)
    self.compile_seconds = 0.0
    self.global_step = 0
    self._batch_fns: dict = {}
    # Whether the RADARS loop's shared programs are on (radars.shared_programs):
    # then `shared` trains and scores every subspace.
    self.switched = (config.method not in dnas_lib.DNAS_METHODS
                     and bool(config.radars.shared_programs))
    self.alpha_penalty = alpha_penalty
    self.shared = switched_lib.SwitchedSupernet(config, mesh, data, space, self.mode,
                                                self.batch_size, slot_orders, alpha_penalty)
    self._finetune_fns: dict = {}

  # -- sizes ---------------------------------------------------------------
  def train_split(self) -> data_lib.Split:
    return self.data.weight_split if self.mode != "single_level" else self.data.joint_split

  def steps_per_epoch(self) -> int:
    n = self.train_split().num_examples
    if n < self.batch_size:
      raise UserError(f"data.batch_size={self.batch_size} is larger than the "
                      f"{n} training examples of a search step")
    return n // self.batch_size

  def run_steps(self, epochs: float) -> int:
    """Steps of a DNAS run of `epochs` (at least one)."""
    return max(1, int(epochs * self.steps_per_epoch()))

  # -- building blocks -----------------------------------------------------
  def model(self, subspace):
    return supernet_lib.build_supernet(self.space, subspace, self.config.supernet,
                                       self.data.num_classes)

  def program(self, subspace, total_steps: int) -> dnas_lib.DnasProgram:
    penalty = self.alpha_penalty
    return dnas_lib.DnasProgram(
        self.model(subspace), self.mode, self.config.dnas, total_steps, self.mesh,
        self.data.mean, self.data.std,
        alpha_penalty=None if penalty is None else lambda alphas, _: penalty(alphas, subspace),
        compute_dtype=self.config.supernet.compute_dtype)

  def compile_step(self, program: dnas_lib.DnasProgram, subspace) -> dnas_lib.CompiledStep:
    """Compiles the train step on abstract inputs: nothing runs."""
    compiled, _ = compile_subspace_step(program, subspace, self.data.image_shape,
                                        self.batch_size)
    self.compile_seconds += compiled.seconds
    return compiled

  def batch_fn(self, split_name: str, sample_mesh=None):
    """`dnas_lib.make_batch_fn` of a split ("weights" or "alphas"); with
    `sample_mesh`, stacked: one batch per key, for a group step."""
    if (split_name, sample_mesh) not in self._batch_fns:
      split = self._split(split_name)
      aug = self.config.data
      sharding = parallel.batch_sharded(self.mesh)
      if sample_mesh is not None:
        # (one mesh for a program's inputs and outputs: the same devices)
        if isinstance(split, data_lib.DeviceSplit):
          split = jax.device_put(split, parallel.replicated(sample_mesh))
        sharding = parallel.sample_batch_sharded(sample_mesh)
      self._batch_fns[(split_name, sample_mesh)] = dnas_lib.make_batch_fn(
          split, self.batch_size, self.data.mean, self.data.std,
          pad=int(aug.crop_padding), flip=bool(aug.flip), sharding=sharding,
          stacked=sample_mesh is not None)
    return self._batch_fns[(split_name, sample_mesh)]

  def _split(self, name: str) -> data_lib.Split:
    return {"weights": self.train_split(), "alphas": self.data.alpha_split}[name]

  def compile_batches(self) -> None:
    """Runs the batch programs of a DNAS run (`batch_fn`: the weights'
    split, and the alphas' where the search is bi-level) once on a
    throwaway key: a background thread can compile them (a shuffle, a crop
    per image) before the first train step, which then finds them. Splits
    on disk are read on the host: nothing to compile. In a run of several
    processes nothing runs here: a program over every process's devices
    runs in the loop's order only."""
    if jax.process_count() > 1:
      return
    names = ["weights"] + (["alphas"] if dnas_lib.dnas_mode(self.config) != "single_level"
                           else [])
    keys = _data_keys(jax.random.key(0))
    for name, key in zip(names, keys):
      if isinstance(self._split(name), data_lib.DeviceSplit):
        jax.block_until_ready(self.batch_fn(name)(key, 0))

  def init_weights(self, model, subspace, key, pool: pool_lib.WeightPool | None):
    alphas = supernet_lib.init_alphas(jax.random.fold_in(key, 1), subspace,
                                      self.config.dnas.alpha_init_scale)
    switched = getattr(model, "switched", False)
    weights = supernet_lib.init_params(model, self.data.image_shape,
                                       None if switched else alphas, jax.random.fold_in(key, 0),
                                       shapes=self.shared.shapes if switched else None)
    if pool is not None:
      weights = pool.select(weights)
    return weights, alphas

  # -- the run ---------------------------------------------------------------
  def run_dnas(self, subspace, epochs: int, key: jax.Array, *,
               pool: pool_lib.WeightPool | None = None, tag: str = "dnas",
               compiled: dnas_lib.CompiledStep | None = None,
               checkpoint: tuple[Any, int] | None = None,
               finetune_steps: int | None = None) -> DnasResult:
    """Trains weights and alphas in `subspace`, derives the genotype and
    scores it on the holdout split with the inherited weights.

    `checkpoint=(checkpointer, every)`: resume from the checkpointer's latest
    step if it has one, and save the DNAS state every `every` steps.
    `finetune_steps` overrides `dnas.derived_finetune_steps` for scoring.
    `compiled` may be a switched supernet's step (`SwitchedSupernet.compile_step`)."""
    subspace = self.space.check_subspace(subspace)
    steps = self.run_steps(epochs)
    k = compiled.slots if compiled is not None else 0
    if k:
      program = self.shared.program(k, steps)
    else:
      program = self.program(subspace, steps)
      compiled = compiled or self.compile_step(program, subspace)
    state, slots = self._initial_state(program, subspace, key, pool, k)
    key_w, key_a = _data_keys(key)
    state, loss, accuracy = self._train(compiled.fn, state, program, key_w, key_a, None,
                                        steps, epochs, tag, checkpoint)
    return self._result(state.weights, state.alphas, subspace, slots, compiled, steps,
                        float(loss[0]), float(accuracy[0]), finetune_steps)

  def run_dnas_group(self, subspaces, epochs: float, keys, *, pools, tag: str,
                     compiled: dnas_lib.CompiledStep, checkpoint: tuple[Any, int] | None = None,
                     finetune_steps: int | None = None) -> list[DnasResult]:
    """`run_dnas` of each of `subspaces` (with its key and pool) on a group
    step (`SwitchedSupernet.compile_group_step`): they train at the same
    time, one per row of the sample mesh (at most `compiled.samples` of
    them; rows left over train a copy of the last one, discarded), then
    are scored one after another. Each result is the one `run_dnas` gives
    on the shared step of the same k (to float rounding)."""
    subspaces = [self.space.check_subspace(s) for s in subspaces]
    if not 0 < len(subspaces) <= compiled.samples:
      raise ValueError(f"{len(subspaces)} subspaces for a group step of {compiled.samples}")
    steps = self.run_steps(epochs)
    k, mesh = compiled.slots, self.shared.sample_mesh()
    program = self.shared.program(k, steps)
    starts = [self._initial_state(program, sub, key, pool, k)
              for sub, key, pool in zip(subspaces, keys, pools)]
    rows = [state for state, _ in starts]
    rows += [rows[-1]] * (compiled.samples - len(rows))
    state = jax.device_put(jax.tree_util.tree_map(lambda *x: np.stack(x), *jax.device_get(rows)),
                           parallel.sample_sharded(mesh))
    data_keys = [_data_keys(key) for key in keys]
    data_keys += [data_keys[-1]] * (compiled.samples - len(data_keys))
    key_w, key_a = (jax.device_put(jnp.stack([pair[i] for pair in data_keys]),
                                   parallel.replicated(mesh)) for i in (0, 1))
    state, loss, accuracy = self._train(compiled.fn, state, program, key_w, key_a, mesh,
                                        steps, epochs, tag, checkpoint, samples=len(subspaces))
    trained = jax.device_get((state.weights, state.alphas))
    return [self._result(*jax.tree_util.tree_map(lambda x, i=i: x[i], trained), sub, slots,
                         compiled, steps, float(loss[i]), float(accuracy[i]), finetune_steps)
            for i, (sub, (_, slots)) in enumerate(zip(subspaces, starts))]

  def _initial_state(self, program: dnas_lib.DnasProgram, subspace, key: jax.Array,
                     pool: pool_lib.WeightPool | None, k: int):
    """(A DNAS run's step-0 state, warm-started from `pool`; the slots of
    `subspace` in a switched supernet's `k`, None if static)."""
    weights, alphas = self.init_weights(program.model, subspace, key, pool)
    if not k:
      return program.init_state(weights, alphas), None
    slots = self.shared.slots(subspace, k)
    return program.init_state(weights, supernet_lib.to_slots(alphas, subspace, slots),
                              slots), slots

  def _train(self, step_fn, state, program: dnas_lib.DnasProgram, key_w, key_a, sample_mesh,
             steps: int, epochs: float, tag: str, checkpoint, samples: int = 1):
    """`steps` of `step_fn` from `state` (resumed from `checkpoint=(checkpointer,
    every)`'s latest step if it has one, saved every `every` steps), with
    a progress bar and logs; `sample_mesh`: a group step's, whose first
    `samples` rows are real. Returns (state, the last logged loss and
    accuracy, per row)."""
    first_step = 0
    ckpt, every = checkpoint if checkpoint is not None else (None, 0)
    if ckpt is not None:
      restored = ckpt.restore_latest(state)
      if restored is not None:
        first_step, state, _ = restored
    gather_w = self.batch_fn("weights", sample_mesh)
    gather_a = self.batch_fn("alphas", sample_mesh) if program.bilevel else None
    log_every = max(1, int(self.config.log_every))
    steps_per_epoch = self.steps_per_epoch()
    # The metrics of the steps since the last log, summed on the host when
    # read (no program of its own: a jitted sum compiled in every process).
    pending = []
    loss = accuracy = np.full(samples, np.nan)
    bar = metrics_lib.progress_bar(steps, tag, initial=first_step,
                                   enabled=self.config.progress_bar)
    for step in range(first_step, steps):
      batch_w = gather_w(key_w, step)
      batch_a = gather_a(key_a, step) if gather_a is not None else None
      state, step_metrics = step_fn(state, batch_w, batch_a)
      pending.append(step_metrics)
      bar.update(1)
      if (step + 1) % log_every == 0 or step + 1 == steps:
        fetched = jax.device_get(pending)
        rows = {k: np.mean([np.ravel(m[k])[:samples] for m in fetched], axis=0)
                for k in fetched[0]}
        means = {k: float(v.mean()) for k, v in rows.items()}
        if not np.isfinite(means["loss"]):
          bar.close()
          raise FloatingPointError(f"{tag}: loss is {means['loss']} at step {step + 1}; "
                                   "lower dnas.weight_lr or check the data")
        loss, accuracy = rows["loss"], rows["accuracy"]
        bar.set_postfix(epoch=f"{step // steps_per_epoch + 1}/{epochs}",
                        loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.3f}")
        self.writer.scalars(self.global_step + step + 1,
                            {**means, "weight_lr": program.learning_rate(step)}, prefix="dnas/")
        pending = []
        if step + 1 < steps and self.time_limit.reached():
          bar.close()
          if ckpt is not None:
            ckpt.save(step + 1, state)
            ckpt.wait()
          raise self.time_limit.error(f"{tag} at step {step + 1} of {steps}")
      if ckpt is not None and every > 0 and (step + 1) % every == 0 and step + 1 < steps:
        ckpt.save(step + 1, state)
    bar.close()
    self.global_step += steps
    return state, loss, accuracy

  def _result(self, weights, alphas, subspace, slots, compiled, steps: int, loss: float,
              accuracy: float, finetune_steps: int | None) -> DnasResult:
    """The result of a DNAS run that ended with `weights` and `alphas`
    (on a switched supernet where `slots` is not None): its genotype,
    scored."""
    alphas_np = [np.asarray(a) for a in jax.device_get(alphas)]
    shared = slots is not None
    if shared:
      alphas_np = supernet_lib.from_slots(alphas_np, subspace, slots)
      weights = self.shared.subspace_weights(weights, subspace)
    genotype = spaces_lib.derive_genotype(self.space, subspace, alphas_np)
    val_accuracy = self.score(genotype, weights, subspace, alphas_np, finetune_steps,
                              shared=shared)
    return DnasResult(subspace, alphas_np, weights, genotype, val_accuracy,
                      loss, accuracy, compiled.bytes, compiled.seconds, steps)

  def score(self, genotype: dict, weights, subspace, alphas,
            finetune_steps: int | None = None, shared: bool = False) -> float:
    """Holdout accuracy of the derived architecture with inherited weights;
    each kept op is scaled by its softmax weight in the supernet, so the
    network sees activations of the scale it was trained with. `shared`
    (the DNAS ran on the switched supernet): score on it too, with one
    evaluator and fine-tune step for every genotype; else on the derived
    network's own (a static program compiles several times faster, which
    pays for a genotype scored once, like the final search's)."""
    derived = spaces_lib.genotype_subspace(self.space, genotype)
    probs = spaces_lib.op_weights(self.space, subspace, alphas)
    op_scales = tuple(jax.device_put(np.asarray(probs[c, list(ops)], np.float32))
                      for c, ops in enumerate(derived))
    slots = None
    if shared:
      model = self.shared.model()
      slots = self.shared.slots(derived, 1)
      op_scales = supernet_lib.to_slots(op_scales, derived, slots)
      derived_weights = self.shared.full_weights(weights)
      evaluator = self.shared.evaluator()
    else:
      model = self.model(derived)
      template = supernet_lib.param_shapes(model, self.data.image_shape)
      # (per-edge paths: either network may store scanned edges stacked)
      derived_weights = pool_lib.restack(pool_lib.canonical(jax.device_get(weights)), template)
      evaluator = dnas_lib.Evaluator(
          dnas_lib.search_logits(model, self.config.supernet.compute_dtype), self.mesh,
          self.data.mean, self.data.std)
    steps = (int(self.config.dnas.derived_finetune_steps) if finetune_steps is None
             else int(finetune_steps))
    if steps > 0:
      derived_weights = self.finetune(model, derived_weights, op_scales, steps, slots)
    return evaluator.evaluate((derived_weights, op_scales, slots), self.data.holdout_split,
                              int(self.config.data.eval_batch_size))["accuracy"]

  def finetune(self, model, weights, op_scales, steps: int, slots=None):
    """A short fine-tune of the derived network's inherited weights on the
    training split (SGD at `dnas.weight_lr_min`..`weight_lr` cosine): closes
    the gap between the supernet and the discrete network it implies."""
    schedule = dnas_lib.weight_schedule(self.config.dnas, steps)
    tx = dnas_lib.weight_optimizer(self.config.dnas, schedule)
    model = precision.in_dtype(model, self.config.supernet.compute_dtype)

    def step(weights, opt_state, batch, op_scales, slots):
      def loss_fn(w):
        logits = model.apply({"params": w}, batch["image"], op_scales=op_scales, slots=slots)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      grads = jax.grad(loss_fn)(weights)
      updates, opt_state = tx.update(grads, opt_state, weights)
      return optax.apply_updates(weights, updates), opt_state

    # Inputs and outputs replicated over the mesh: the second call finds the
    # first call's program (an unplaced input would compile it twice). On the
    # switched supernet one program serves every genotype (weight decay also
    # moves the weights of ops outside the slots: they are not used here).
    replicated = parallel.replicated(self.mesh)
    fns = self._finetune_fns.get(steps) if slots is not None else None
    if fns is None:
      fns = (jax.jit(step, donate_argnums=(0, 1), out_shardings=(replicated, replicated)),
             jax.jit(tx.init, out_shardings=replicated))
      if slots is not None:
        self._finetune_fns[steps] = fns
    jitted, init = fns
    gather = self.batch_fn("weights")
    key = jax.random.key(int(self.config.seed) + 7)
    # (a copy: the step donates its weights, the caller keeps its own)
    weights = jax.device_put(weights, replicated, may_alias=False)
    opt_state = init(weights)
    op_scales = jax.device_put(op_scales, replicated)
    slots = None if slots is None else jax.device_put(np.asarray(slots, np.int32), replicated)
    for i in range(steps):
      weights, opt_state = jitted(weights, opt_state, gather(key, i), op_scales, slots)
    return weights


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def budget_bytes(config) -> float | None:
  gb = config.memory_budget_gb
  return None if gb is None else float(gb) * memory_lib.GB


def prepare_search(config, workdir: str) -> tuple[Path, spaces_lib.SearchSpace]:
  """Checks `config`, makes `workdir` and writes its config.json (every
  search method); returns the workdir and the search space."""
  config_check.check_config(config)
  space = spaces_lib.space_from_config(config.space)
  path = workdir_lib.prepare(workdir)
  workdir_lib.write_json(path / "config.json", config.to_dict())
  return path, space


def run_search(config, workdir: str) -> dict:
  """`mode=search` for `method=darts|single_darts` (the RADARS loop's
  methods run from `radars_jax.radars.loop.run_search`)."""
  if config.method not in dnas_lib.DNAS_METHODS:
    raise UserError(f"method={config.method} runs in radars_jax.radars.loop.run_search; "
                    f"search.run_search runs {', '.join(dnas_lib.DNAS_METHODS)}")
  path, space = prepare_search(config, workdir)
  return run_dnas_search(config, path, space)


def run_dnas_search(config, path: Path, space: spaces_lib.SearchSpace) -> dict:
  """`method=darts` / `single_darts`: DNAS over the whole space."""
  with compile_clock.CompileClock() as clock:
    return _run_dnas_search(config, path, space, clock)


def _run_dnas_search(config, path: Path, space: spaces_lib.SearchSpace,
                     clock: compile_clock.CompileClock) -> dict:
  """The search, resumed from WORKDIR/checkpoints/dnas (saved every
  `radars.checkpoint_every_steps` steps, and where `search.max_seconds`
  stops it: then summary.json says so and holds its seconds, which a
  rerun counts on from)."""
  start = time.perf_counter()
  before = seconds_before_stop(path)
  limit = TimeLimit(config.search.max_seconds, lambda: before + time.perf_counter() - start)
  config, options = performance.start_run(config)
  mesh = parallel.make_mesh()
  data = load_search_data(config.data, mesh)
  writer = metrics_lib.MetricWriter(path / "tensorboard", path / "metrics.jsonl")
  searcher = Searcher(config, mesh, data, space, writer, time_limit=limit)
  subspace = space.full_subspace()
  epochs = int(config.dnas.epochs)
  program = searcher.program(subspace, searcher.run_steps(epochs))
  budget = budget_bytes(config)
  compiled = None
  with checkpointing.Checkpointer(path / "checkpoints" / "dnas", max_to_keep=2) as ckpt:

    def stopped(reason: str) -> dict:
      # (also from the watchdog's thread: a save in flight is finished first)
      summary = stopped_summary(config, space.name, data.name, limit.elapsed(), reason,
                                steps_done=ckpt.latest_step(), steps=searcher.run_steps(epochs),
                                step_bytes=compiled.bytes if compiled is not None else None,
                                memory_budget_bytes=budget)
      workdir_lib.write_json(path / "summary.json", summary)
      return summary

    try:
      with Watchdog(limit, config.search.overrun_seconds, stopped, path):
        compiled = searcher.compile_step(program, subspace)
        if budget is not None and compiled.bytes > budget:
          raise UserError(
              f"method={config.method} on space {space.name} needs "
              f"{memory_lib.format_gb(compiled.bytes)} per step, budget "
              f"{memory_lib.format_gb(budget)}; use method=radars to search it within the "
              "budget")
        resumed = ckpt.latest_step()
        if resumed is not None:
          print(f"radars_jax: resuming {config.method} search at step {resumed} from "
                f"{ckpt.directory}", flush=True)
        result = searcher.run_dnas(subspace, epochs, jax.random.key(config.seed),
                                   tag=config.method, compiled=compiled,
                                   checkpoint=(ckpt, int(config.radars.checkpoint_every_steps)))
    except TimeLimitReached as stop:
      writer.close()
      return stopped(str(stop))
  writer.close()
  summary = {
      "method": config.method, "mode": searcher.mode, "space": space.name,
      "dataset": data.name, "seed": int(config.seed), "genotype": result.genotype,
      "val_accuracy": result.val_accuracy, "train_loss": result.train_loss,
      "train_accuracy": result.train_accuracy,
      "search_seconds": limit.elapsed(),
      "compile_seconds": searcher.compile_seconds,
      # every program of the search (evaluators and small ops too)
      "compile_breakdown_seconds": dict(clock.seconds), "compile_total_seconds": clock.total,
      # (every program compiled in this thread: the wall time compiling cost)
      "compile_loop_seconds": clock.opener_seconds,
      "step_bytes": result.step_bytes,
      "memory_budget_bytes": budget, "steps": result.steps,
      "devices": int(mesh.devices.size),
      "supernet_weights": supernet_lib.count_params(result.weights),
      "choice_points": [cp.name for cp in space.choice_points],
      "space_ops": list(space.op_names),
      "subspace": [list(a) for a in subspace],
      "alphas": [a.tolist() for a in result.alphas],
      **spaces_lib.margin_summary(space, subspace, result.alphas),
      "performance_options": options,
  }
  workdir_lib.write_json(path / "genotype.json", result.genotype)
  workdir_lib.write_json(path / "summary.json", summary)
  report.write_report(path)
  return summary


def compile_subspace_step(program: dnas_lib.DnasProgram, subspace, image_shape,
                          batch_size: int, bytes_only: bool = False):
  """(the compiled train step, the weight shapes) of `program`'s supernet for
  `subspace`, compiled on abstract inputs: nothing is initialised or run.
  `bytes_only`: compiled only to read its bytes, never to run
  (`dnas.bytes_only_compiler_options`)."""
  alphas = jax.eval_shape(lambda: supernet_lib.init_alphas(jax.random.key(0), subspace))
  weights = supernet_lib.param_shapes(program.model, image_shape, alphas)
  compiled = program.compile_train_step(
      *program.abstract_inputs(weights, alphas, batch_size, image_shape), bytes_only=bytes_only)
  return compiled, weights


def architecture_range(space: spaces_lib.SearchSpace, supernet_config, num_classes: int,
                       image_shape) -> dict | None:
  """The weights and FLOPs of the space's cheapest and costliest
  architectures (`hardware.cost_ranges`), where an architecture is one op
  per choice point (NAS-Bench-201, mobile); None for DARTS cells, whose
  derived cells keep two edges per node."""
  if space.kind == "darts_cell":
    return None
  per_edge = cost_lib.per_edge_config(supernet_config)
  return hardware.cost_ranges(
      space, lambda sub: supernet_lib.build_supernet(space, sub, per_edge, num_classes),
      image_shape)


def describe(config) -> dict:
  """`mode=describe`: the space, the supernet and the bytes of one
  full-space train step, read from XLA on abstract inputs (nothing runs)."""
  config_check.check_config(config)
  config, options = performance.resolve(config)
  space = spaces_lib.space_from_config(config.space)
  image_shape, num_classes = data_lib.dataset_spec(config.data)
  mesh = parallel.make_mesh()
  batch_size = int(config.data.batch_size)
  parallel.check_divisible(batch_size, mesh)
  subspace = space.full_subspace()
  model = supernet_lib.build_supernet(space, subspace, config.supernet, num_classes)
  mode = dnas_lib.dnas_mode(config)
  program = dnas_lib.DnasProgram(model, mode, config.dnas, 1, mesh, (0.0,), (1.0,),
                                 compute_dtype=config.supernet.compute_dtype)
  alphas = jax.eval_shape(lambda: supernet_lib.init_alphas(jax.random.key(0), subspace))
  weights = supernet_lib.param_shapes(model, image_shape, alphas)
  try:
    compiled, _ = compile_subspace_step(program, subspace, image_shape, batch_size,
                                        bytes_only=True)
  except dnas_lib.ProgramTooLarge as e:
    # not compiled: the bytes are unknown, the size says why
    compiled = dnas_lib.CompiledStep(None, 0.0, None, ops=e.ops)
  budget = budget_bytes(config)
  info = {
      "space": space.name, "kind": space.kind,
      "num_choice_points": space.num_choice_points,
      "choice_points": [{"name": cp.name, "ops": list(cp.ops)} for cp in space.choice_points],
      "ops_per_choice_point": [len(cp.ops) for cp in space.choice_points],
      "supernet_weights": supernet_lib.count_params(weights),
      "architecture_range": architecture_range(space, config.supernet, num_classes,
                                               image_shape),
      "dataset": config.data.name, "image_shape": list(image_shape),
      "num_classes": num_classes, "batch_size": batch_size, "devices": int(mesh.devices.size),
      "method": config.method, "dnas_mode": mode,
      "full_space_step_bytes": compiled.bytes,
      "full_space_step": (memory_lib.format_gb(compiled.bytes) if compiled.bytes is not None
                          else "not compiled: more XLA operations than dnas.max_program_ops"),
      "full_space_step_ops": compiled.ops,
      "compile_seconds": round(compiled.seconds, 2),
      "memory_budget_bytes": budget,
      "fits_budget": (None if budget is None or compiled.bytes is None
                      else compiled.bytes <= budget),
      "performance_options": options,
  }
  # (`genotype` is a field of training configs only: absent from a search's)
  if config.get("genotype"):
    info["genotype_network"] = train.describe_genotype(config)
  return info
