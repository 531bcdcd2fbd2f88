"""The RADARS search loop (`method=radars`) and its baselines (`rl`, `random`).

    python -m radars_jax.main --config configs/digits.py --workdir runs/digits

`method=radars`, per iteration:
  1. size k: the largest number of ops per choice point whose worst-case
     subspace fits `memory_budget_gb` (`radars_jax.cost_model`);
  2. the controller (`radars_jax.controller`) samples P subspaces of k alive
     ops per choice point;
  3. each one is searched by DNAS with a compiled train step whose exact
     bytes are within the budget: by default one program for every
     subspace of k ops (`radars.shared_programs`: a switched supernet, see
     `radars_jax.supernet`, compiled once per k, the first one in a
     background thread while the cost model calibrates); where that program does
     not fit the budget, the sample's own static program (a subspace over
     the budget is shrunk first, so no step ever runs over budget; the
     later samples compile in a background thread while the earlier ones
     train, `radars.compile_ahead`). DNAS is warm-started from the weight
     pool and its weights are written back; its reward is the holdout
     accuracy of the architecture derived from it (minus
     `radars.cost_weight` x millions of parameters);
  4. the controller's critic and policy are updated, and ops whose policy
     probability is below `controller.prune_threshold` are pruned (never the
     last op of a choice point).
The loop stops when the whole alive space fits the budget (or after
`radars.max_iterations`, then the alive space is cut to the k most probable
ops per choice point); one final DNAS over it gives the genotype.

`method=rl` is the same controller with k = 1: every sample is a whole
architecture, scored after brief training with shared weights; the best one
found is the result (no pruning, `radars.max_iterations` iterations).
`method=random` samples uniformly and never learns.

Everything is resumable: after every scored sample, the search state (weight
pool, controller and critic with their optimiser states and replay buffer,
alive set, PRNG key) goes to an orbax checkpoint in WORKDIR/checkpoints/search
with the loop position, history and cost model as JSON metadata, and long
DNAS runs checkpoint their own state every `radars.checkpoint_every_steps`
steps. Rerunning the same command continues from there; the result equals
that of an uninterrupted run.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import checkpointing
from radars_jax import compile_clock
from radars_jax import controller as ctrl
from radars_jax import cost_model as cost_lib
from radars_jax import dnas as dnas_lib
from radars_jax import memory as memory_lib
from radars_jax import metrics as metrics_lib
from radars_jax import parallel
from radars_jax import search as search_lib
from radars_jax import spaces as spaces_lib
from radars_jax import supernet as supernet_lib
from radars_jax import weight_pool as pool_lib
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError

LOOP_METHODS = ("radars", "rl", "random")


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class LoopState:
  """The arrays of the search (checkpointed as one pytree).

  pool: {param path: float32 array} every op's weights in the full space;
  trained: {param path: bool array ()} whether the pool entry was trained
  (untrained entries start from their fresh initialisation);
  controller: ctrl.ControllerState; alive: bool [C, M]; key: PRNG key."""
  pool: dict
  trained: dict
  controller: Any
  alive: np.ndarray
  key: jax.Array

  def tree(self):
    return {"pool": self.pool, "trained": self.trained, "controller": self.controller,
            "alive": self.alive, "key": self.key}

  @classmethod
  def from_tree(cls, t) -> "LoopState":
    # An uncommitted key (as a fresh one is), so that it may meet arrays
    # sharded over every device.
    key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(t["key"])))
    return cls(t["pool"], t["trained"], t["controller"], np.asarray(t["alive"], bool), key)


class PoolView(pool_lib.WeightPool):
  """A `WeightPool` over the fixed full-space arrays of a LoopState: only
  trained entries are read (`select`), and what is written back
  (`write_back`) is marked trained."""

  def __init__(self, state: LoopState):
    super().__init__()
    self.state = state

  def stored(self, path: str):
    return self.state.pool[path] if bool(self.state.trained.get(path, False)) else None

  def store(self, path: str, value) -> None:
    if path in self.state.pool:
      self.state.pool[path] = np.asarray(value, np.float32)
      self.state.trained[path] = np.asarray(True)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def subspace_of(ops_row) -> spaces_lib.Subspace:
  """Controller sample int [C, k] (-1 = empty slot) -> Subspace."""
  return tuple(tuple(sorted(int(o) for o in row if o >= 0)) for row in np.asarray(ops_row))


def ops_of(subspace: spaces_lib.Subspace, k: int) -> np.ndarray:
  """Subspace -> int [C, k] (-1 padded)."""
  out = -np.ones((len(subspace), k), np.int32)
  for c, active in enumerate(subspace):
    out[c, :len(active)] = active[:k]
  return out


def _slug(text: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in text)


def _full_pool(space, searcher) -> tuple[dict, dict]:
  """Fixed-structure pool: zero arrays of every full-space parameter."""
  model = searcher.model(space.full_subspace())
  alphas = jax.eval_shape(lambda: supernet_lib.init_alphas(jax.random.key(0),
                                                           space.full_subspace()))
  shapes = pool_lib.canonical(supernet_lib.param_shapes(model, searcher.data.image_shape,
                                                          alphas))
  pool = {p: np.zeros(s.shape, np.float32) for p, s in shapes.items()}
  trained = {p: np.asarray(False) for p in shapes}
  return pool, trained


def _params_millions(searcher, genotype) -> float:
  model = searcher.model(spaces_lib.genotype_subspace(searcher.space, genotype))
  return supernet_lib.count_params(
      supernet_lib.param_shapes(model, searcher.data.image_shape)) / 1e6


def _counted(meta, compiled, start: float, what: str, ahead: bool = False):
  """Adds a train-step compile to `meta`: its compile seconds, and the
  seconds the loop waited for it since `start`, in total and as a record
  of its own (`what` it compiled, its bytes, whether it was compiled
  `ahead` in the background thread) in `meta["compiles"]`."""
  waited = time.perf_counter() - start
  meta["compile_seconds"] += compiled.seconds
  meta["compile_wait_seconds"] = meta.get("compile_wait_seconds", 0.0) + waited
  meta.setdefault("compiles", []).append(
      {"what": what, "compile_seconds": round(compiled.seconds, 3),
       "waited_seconds": round(waited, 3), "bytes": int(compiled.bytes), "ops": compiled.ops,
       "ahead": ahead})
  return compiled


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

class RadarsSearch:
  """One `method=radars|rl|random` search in a workdir (resumable)."""

  def __init__(self, config, path: Path, space: spaces_lib.SearchSpace):
    search_lib.check_config(config)
    self.config, self.path, self.space = config, path, space
    self.method = config.method
    self.start = time.perf_counter()
    self.mesh = parallel.make_mesh()
    self.data = search_lib.load_search_data(config.data, self.mesh)
    self.writer = metrics_lib.MetricWriter(path / "tensorboard", path / "metrics.jsonl")
    self.searcher = search_lib.Searcher(config, self.mesh, self.data, space, self.writer)
    self.budget = search_lib.budget_bytes(config)
    self.hparams = ctrl.ControllerHParams.from_config(config.controller)
    self.num_samples = int(config.controller.samples_per_iteration)
    self.ckpt = checkpointing.Checkpointer(path / "checkpoints" / "search", max_to_keep=2)
    self.dnas_ckpt_root = path / "checkpoints" / "dnas"
    self.verbose = bool(config.get("progress_bar", True))
    # Train steps of the batch's later samples compile in this thread while
    # the current sample trains (radars.compile_ahead).
    self._compiler = (concurrent.futures.ThreadPoolExecutor(1, "radars-compile")
                      if config.radars.get("compile_ahead", True) else None)
    self._ahead: dict = {}    # (subspace, steps) -> future of its static step
    self._shared: dict = {}   # (k, steps) -> the switched supernet's compiled step
    self._shared_ahead: dict = {}   # (k, steps) -> future of it (compile_shared_ahead)
    self._controller_queued = False
    self.clock = compile_clock.CompileClock()
    self._clock_before: dict = {}
    self._loop_clock_before = 0.0

  # -- state -------------------------------------------------------------
  def fresh(self) -> tuple[LoopState, dict]:
    pool, trained = _full_pool(self.space, self.searcher)
    key = jax.random.key(int(self.config.seed))
    controller = ctrl.init_controller(jax.random.fold_in(key, 1), self.space.num_choice_points,
                                      self.space.max_ops, self.config.controller)
    alive = np.zeros((self.space.num_choice_points, self.space.max_ops), bool)
    for c, cp in enumerate(self.space.choice_points):
      alive[c, :len(cp.ops)] = True
    state = LoopState(pool, trained, controller, alive, key)
    meta = {"iteration": 0, "sample": 0, "batch": None, "history": [], "runs": [],
            "cost_model": None, "compile_seconds": 0.0, "compile_wait_seconds": 0.0,
            "compiles": [],
            "clock_seconds": {}, "elapsed_seconds": 0.0,
            "phase": "loop", "best": None}
    return state, meta

  def save(self, step: int, state: LoopState, meta: dict) -> None:
    meta = dict(meta, elapsed_seconds=self.elapsed(meta), clock_seconds=self.clock_seconds(),
                loop_clock_seconds=self._loop_clock_before + self.clock.opener_seconds)
    self.ckpt.save(step, state.tree(), meta)
    self.ckpt.wait()

  def elapsed(self, meta) -> float:
    return self._elapsed_before + time.perf_counter() - self.start

  def clock_seconds(self) -> dict:
    """Tracing, lowering and XLA seconds of every compile so far (all runs
    of this search)."""
    return {stage: self._clock_before.get(stage, 0.0) + seconds
            for stage, seconds in dict(self.clock.seconds).items()}

  # -- cost model ----------------------------------------------------------
  def cost_model(self, meta, alive) -> cost_lib.CostModel:
    if meta["cost_model"] is not None:
      return cost_lib.CostModel.from_json(meta["cost_model"], self.space)
    per_device = self.searcher.batch_size // int(self.mesh.devices.size)
    bar = metrics_lib.progress_bar(1, "cost model (tracing ops)", enabled=self.verbose)

    def progress(done, total):
      bar.total = total
      bar.n = done
      bar.refresh()

    model = cost_lib.trace_cost_model(self.space, self.config.supernet, self.data.num_classes,
                                      self.data.image_shape, per_device, progress)
    bar.close()
    # Calibrate on real compiles: the worst cases at k = 1 and at the k the
    # uncalibrated model would choose (at least 2), unless the first
    # compile's size predicts the second over `dnas.max_program_ops`. Only
    # their bytes are read (they never run), so they compile without kernel
    # optimisation.
    most = int(np.asarray(alive).sum(-1).max())
    k_guess = min(max(2, model.largest_k(alive, self.budget) if self.budget else 2), most)
    k_ahead = self.subspace_size(model, alive, largest=k_guess)
    for k in sorted({1, k_guess}):
      mask = model.worst_case(alive, k)
      if k > 1 and self.predicted_too_large(model, mask) is not None:
        continue
      try:
        compiled = self.compile(self.space.subspace_from_mask(mask), meta, bytes_only=True,
                                what=f"calibration, worst case of {k} op{'s' * (k > 1)} "
                                "(bytes only)")
      except dnas_lib.ProgramTooLarge:
        if k == 1:
          raise
        continue
      model.add_point(mask, compiled.bytes, compiled.ops)
      if k == 1:
        # Meanwhile the shared program of the first iteration's likely k
        # compiles in the background (where its size is not predicted over
        # the limit: the first compile has calibrated the prediction).
        self.compile_shared_ahead(model, k_ahead)
    return model

  def predicted_too_large(self, model: cost_lib.CostModel, mask,
                          margin: float = 1.0) -> dnas_lib.ProgramTooLarge | None:
    """The refusal of the train step of `mask` if `model` predicts more
    than `margin` x `dnas.max_program_ops` XLA operations for it (nothing
    is traced), else None."""
    limit = self.config.dnas.get("max_program_ops")
    predicted = model.program_ops(mask)
    if limit and predicted is not None and predicted > margin * int(limit):
      return dnas_lib.ProgramTooLarge(int(predicted), int(limit), estimated=True)
    return None

  def compile(self, subspace, meta, steps: int = 1, bytes_only: bool = False,
              what: str = "static step"):
    """The compiled train step of `subspace` (compiled ahead if it was
    queued by `compile_ahead`). `meta` counts the seconds spent compiling
    and, separately, the seconds the loop waited for it. `bytes_only`: the
    step will not run (`dnas.bytes_only_compiler_options`); `what` names
    it in `meta["compiles"]`."""
    start = time.perf_counter()
    future = self._ahead.get((subspace, steps))
    if future is not None:
      compiled = future.result()
    else:
      compiled = self._compile_now(subspace, steps, bytes_only)
    return _counted(meta, compiled, start, what, ahead=future is not None)

  def _compile_now(self, subspace, steps: int, bytes_only: bool = False):
    program = self.searcher.program(subspace, steps)
    compiled, _ = search_lib.compile_subspace_step(program, subspace, self.data.image_shape,
                                                   self.searcher.batch_size, bytes_only)
    return compiled

  def compile_shared(self, k: int, steps: int, meta):
    """The switched supernet's train step for subspaces of at most `k` ops
    per choice point (compiled once per search and process; in the
    background if `compile_shared_ahead` queued it)."""
    if (k, steps) not in self._shared:
      start = time.perf_counter()
      future = self._shared_ahead.pop((k, steps), None)
      compiled = future.result() if future is not None else self._compile_shared_now(k, steps)
      self._shared[(k, steps)] = _counted(meta, compiled, start,
                                          f"shared step, {k} ops per choice point",
                                          ahead=future is not None)
    return self._shared[(k, steps)]

  def compile_shared_ahead(self, model: cost_lib.CostModel, k: int) -> None:
    """Queues the shared program of the first iteration's likely `k` (the
    calibration's `k_guess` as `subspace_size` caps it) for compiling in
    the background thread while the calibration compiles run on this one
    (XLA's CPU compile is mostly one thread, so the three take less wall
    time side by side than one after another; docs/performance.md). The
    traced `model` orders the slots, so the program does not wait for
    calibration. Where the calibrated model sizes another k, the
    loop compiles that one and this one is never used; the programs are
    those `compile_shared` builds, so results are unchanged."""
    if self._compiler is None or not self.searcher.switched:
      return
    if self.shared_predicted_too_large(model) is not None:
      return
    self.searcher.slot_orders = model.slot_orders()   # (before the switched supernet is built)
    key = (k, self.run_steps())
    if key not in self._shared_ahead:
      self._shared_ahead[key] = self._compiler.submit(self._compile_shared_now, *key)

  def _compile_shared_now(self, k: int, steps: int):
    program = self.searcher.shared_program(k, steps)
    return self.searcher.compile_shared_step(program, k)

  def shared_predicted_too_large(self, model) -> dnas_lib.ProgramTooLarge | None:
    """`predicted_too_large` for the shared program (every op of the space).
    Its switched choice points are not the static programs the prediction
    is fitted to (scanned, they compile to fewer operations per op), so it
    is refused untraced only beyond 3x the limit."""
    full = self.space.mask_from_subspace(self.space.full_subspace())
    return self.predicted_too_large(model, full, margin=3.0)

  def shared_step(self, k: int, steps: int, meta, model):
    """The shared program the samples of k ops run on, or None (shared
    programs off, its bytes over the budget or its size over
    `dnas.max_program_ops`: each sample compiles its own). The decision is
    kept in `meta`, so a resumed search makes the same one."""
    if not self.searcher.switched:
      return None
    decided = meta.setdefault("shared_fits", {})
    key = f"{k},{steps}"
    if key not in decided:
      # (its size does not depend on k: refused for one k, refused for all)
      predicted = self.shared_predicted_too_large(model)
      ops = (meta.get("shared_program_ops") or (predicted.ops if predicted else 0)
             or self._shared_refused_ahead())
      if not ops:
        try:
          compiled = self.compile_shared(k, steps, meta)
        except dnas_lib.ProgramTooLarge as e:
          ops = e.ops
      if ops:
        if not meta.get("shared_program_ops"):
          about = "about " if predicted else ""
          print(f"radars_jax: the shared program has {about}{ops:,} XLA operations, more than "
                f"dnas.max_program_ops={self.config.dnas.max_program_ops:,}: each sample "
                "compiles its own", flush=True)
        meta["shared_program_ops"] = ops
        decided[key] = False
        return None
      decided[key] = self.budget is None or compiled.bytes <= self.budget
    return self.compile_shared(k, steps, meta) if decided[key] else None

  def _shared_refused_ahead(self) -> int:
    """The operations of a shared program the background thread refused
    (`dnas.ProgramTooLarge`), else 0; waits for the queued ones."""
    for future in list(self._shared_ahead.values()):
      if isinstance(future.exception(), dnas_lib.ProgramTooLarge):
        return future.exception().ops
    return 0

  def compile_ahead(self, subspaces, steps: int) -> None:
    """Queues the train steps of `subspaces` for compiling, in order, in
    the background thread: each compiles while the samples before it train
    (on an accelerator the host compiles while the device computes). The
    programs are the ones `compile` would build, so results are unchanged."""
    if self._compiler is None:
      return
    for subspace in subspaces:
      if (subspace, steps) not in self._ahead:
        self._ahead[(subspace, steps)] = self._compiler.submit(self._compile_now, subspace,
                                                               steps)

  def compile_controller_ahead(self, controller_state, k: int) -> None:
    """Queues the controller update for compiling in the background thread
    (once per process), so the first iteration's end does not wait for it.
    JAX keeps the compiled program for the update's later call (same
    shapes and static hyperparameters); a mismatch would only compile again."""
    if self._compiler is None or self.method == "random" or self._controller_queued:
      return
    self._controller_queued = True
    n, c, m = self.num_samples, self.space.num_choice_points, self.space.max_ops
    spec = jax.ShapeDtypeStruct
    args = (controller_state, jax.random.key(0), spec((n, c, k), jnp.int32),
            spec((n, c), jnp.float32), spec((n,), jnp.float32), spec((c, m), jnp.bool_),
            spec((n,), jnp.bool_), self.hparams)
    self._compiler.submit(lambda: ctrl._controller_update.lower(*args).compile())  # pylint: disable=protected-access

  def close(self) -> None:
    """Stops the compile thread (queued compiles are dropped)."""
    if self._compiler is not None:
      self._compiler.shutdown(wait=True, cancel_futures=True)
    self._ahead.clear()
    self._shared_ahead.clear()

  # -- sampling ------------------------------------------------------------
  def sample(self, state: LoopState, iteration: int, k: int):
    key = jax.random.fold_in(jax.random.fold_in(state.key, iteration), 0)
    # (host arrays: the logits of a fresh controller and of an updated one
    # are placed differently, and would each compile the sampler)
    logits = np.asarray(state.controller.logits)
    if self.method == "random":
      logits = np.zeros_like(logits)
    ops, logp = ctrl.sample_subspaces(key, logits, np.asarray(state.alive), k,
                                      self.num_samples, per_choice_point=True)
    return np.asarray(ops), np.asarray(logp)

  def fit_budget(self, subspace, model: cost_lib.CostModel, meta, k: int = 0,
                 what: str = "static step", steps: int | None = None):
    """The shared program of `k` ops per choice point if it fits the budget
    (`k` > 0, `shared_step`); else compile `subspace`, and while its exact
    bytes exceed the budget, drop its costliest op at the choice point where
    that op costs most (never the last op of a choice point). Returns
    (subspace, compiled, estimate); `what` names its compiles. `steps`:
    the length of the run (its learning-rate schedule is compiled in;
    default that of a sample's run)."""
    steps = self.run_steps() if steps is None else steps
    shared = self.shared_step(k, steps, meta, model) if k else None
    if shared is not None:
      return subspace, shared, model.estimate(self.space.mask_from_subspace(subspace))
    while True:
      mask = self.space.mask_from_subspace(subspace)
      estimate = model.estimate(mask)
      # (a program predicted over dnas.max_program_ops is not even traced,
      # unless it was queued)
      refusal = (self.predicted_too_large(model, mask)
                 if (subspace, steps) not in self._ahead else None)
      if refusal is not None:
        compiled = None   # shrunk like a step over the budget
      else:
        try:
          compiled = self.compile(subspace, meta, steps, what=what)
        except dnas_lib.ProgramTooLarge as too_large:
          compiled, refusal = None, too_large
        else:
          model.add_point(mask, compiled.bytes, compiled.ops)
          if self.budget is None or compiled.bytes <= self.budget:
            return subspace, compiled, estimate
      cost = np.where(mask & (mask.sum(-1, keepdims=True) > 1), model.per_op, -np.inf)
      if not np.isfinite(cost).any():
        if compiled is None:
          raise refusal
        raise UserError(
            f"one op per choice point needs {memory_lib.format_gb(compiled.bytes)} per step, "
            f"budget {memory_lib.format_gb(self.budget)}: raise memory_budget_gb or make the "
            "supernet smaller (supernet.channels, supernet.layers, data.batch_size)")
      c, o = np.unravel_index(np.argmax(cost), cost.shape)
      subspace = tuple(tuple(x for x in active if not (i == c and x == o))
                       for i, active in enumerate(subspace))

  def run_steps(self) -> int:
    return max(1, int(float(self.config.radars.subspace_epochs) * self.searcher.steps_per_epoch()))

  def run_sample(self, state, meta, iteration: int, index: int, subspace, model, k: int):
    """DNAS in one sampled subspace (of at most `k` ops per choice point),
    resumable mid-run; returns a run record."""
    tag = f"it{iteration}_s{index}"
    subspace, compiled, estimate = self.fit_budget(subspace, model, meta, k,
                                                   what=f"static step, sample {tag}")
    key = jax.random.fold_in(jax.random.fold_in(state.key, iteration), index + 1)
    # (the search's start-up: cost model, calibration, the first program)
    meta.setdefault("first_train_step_seconds", self.elapsed(meta))
    pool = PoolView(state)
    ckpt_dir = self.dnas_ckpt_root / tag
    with checkpointing.Checkpointer(ckpt_dir, max_to_keep=2) as dnas_ckpt:
      result = self.searcher.run_dnas(
          subspace, float(self.config.radars.subspace_epochs), key, pool=pool,
          tag=f"{self.method} {tag}", compiled=compiled,
          checkpoint=(dnas_ckpt, int(self.config.radars.checkpoint_every_steps)),
          finetune_steps=int(self.config.radars.sample_finetune_steps))
    pool.write_back(result.weights)
    reward = float(result.val_accuracy)
    cost_weight = float(self.config.radars.get("cost_weight", 0.0))
    params_m = _params_millions(self.searcher, result.genotype)
    if cost_weight:
      reward -= cost_weight * params_m
    return {"iteration": iteration, "sample": index,
            "subspace": [list(a) for a in subspace],
            "ops_per_choice_point": [len(a) for a in subspace],
            "estimated_bytes": estimate, "compiled_bytes": compiled.bytes,
            "program": "shared" if compiled.slots else "static",
            # every op dead (e.g. an NB201 cell whose output node gets only
            # `none`): XLA removes the cell, the estimate is an upper bound
            "degenerate": not cost_lib.live_ops(self.space,
                                                self.space.mask_from_subspace(subspace)).any(),
            "val_accuracy": result.val_accuracy, "reward": reward,
            "derived_params_millions": params_m, "genotype": result.genotype,
            "steps": result.steps, "pool_hits": pool.hits, "pool_misses": pool.misses}

  # -- the whole search ------------------------------------------------------
  def run(self) -> dict:
    try:
      with self.clock:
        return self._run()
    finally:
      self.close()

  def _run(self) -> dict:
    state, meta = self.fresh()
    restored = self.ckpt.restore_latest(state.tree())
    self._elapsed_before = 0.0
    if restored is not None:
      _, tree, meta = restored
      state = LoopState.from_tree(tree)
      self._elapsed_before = float(meta.get("elapsed_seconds", 0.0))
      self._clock_before = dict(meta.get("clock_seconds") or {})
      self._loop_clock_before = float(meta.get("loop_clock_seconds", 0.0))
      print(f"radars_jax: resuming {self.method} search at iteration {meta['iteration']}, "
            f"sample {meta['sample']} from {self.ckpt.directory}", flush=True)
    model = self.cost_model(meta, state.alive)
    meta["cost_model"] = model.to_json()
    self.searcher.slot_orders = model.slot_orders()   # (before the switched supernet is built)
    if self.budget is not None and model.largest_k(state.alive, self.budget) < 1:
      one = model.estimate(model.worst_case(state.alive, 1))
      raise UserError(f"one op per choice point needs about {memory_lib.format_gb(one)} per "
                      f"step, budget {memory_lib.format_gb(self.budget)}: raise "
                      "memory_budget_gb or make the supernet smaller")
    max_iterations = int(self.config.radars.max_iterations)
    bar = metrics_lib.progress_bar(max_iterations, f"{self.method} iterations",
                                   initial=meta["iteration"], enabled=self.verbose)
    while meta["phase"] == "loop":
      it = meta["iteration"]
      k = self.subspace_size(model, state.alive)
      if self.method == "radars" and (it >= max_iterations or self.alive_fits(model, state.alive)):
        meta["phase"] = "final"
        break
      if self.method != "radars" and it >= max_iterations:
        meta["phase"] = "done"
        break
      if meta["batch"] is None:
        ops, logp = self.sample(state, it, k)
        meta["batch"] = {"ops": ops.tolist(), "logp": logp.tolist(), "k": k, "records": []}
        meta["sample"] = 0
      batch = meta["batch"]
      ops = np.asarray(batch["ops"], np.int32)
      if self.shared_step(int(batch["k"]), self.run_steps(), meta, model) is None:
        self.compile_ahead([subspace_of(o) for o in ops[meta["sample"]:]
                            if self.predicted_too_large(
                                model, self.space.mask_from_subspace(subspace_of(o))) is None],
                           self.run_steps())
      self.compile_controller_ahead(state.controller, ops.shape[-1])
      while meta["sample"] < len(ops):
        i = meta["sample"]
        record = self.run_sample(state, meta, it, i, subspace_of(ops[i]), model,
                                 int(batch["k"]))
        batch["records"].append(record)
        runs_best = meta["best"]
        if runs_best is None or record["reward"] > runs_best["reward"]:
          meta["best"] = record
        meta["runs"].append({k2: v for k2, v in record.items() if k2 != "genotype"})
        meta["sample"] = i + 1
        meta["cost_model"] = model.to_json()
        self.save(it * (self.num_samples + 1) + i + 1, state, meta)
        shutil.rmtree(self.dnas_ckpt_root / f"it{it}_s{i}", ignore_errors=True)
      self._ahead.clear()   # (a batch's compiled steps are not needed after it)
      self.end_iteration(state, meta, model, ops, batch)
      if self.method == "radars" and (it + 1 >= max_iterations
                                      or self.alive_fits(model, state.alive)):
        # the last iteration: the final search's step compiles while this
        # one's checkpoint and plots are written
        self.compile_ahead([self.final_subspace(state, model)], self.final_steps())
      meta["iteration"] = it + 1
      meta["batch"] = None
      meta["sample"] = 0
      self.save((it + 1) * (self.num_samples + 1), state, meta)
      bar.update(1)
      bar.set_postfix(best=f"{meta['best']['reward']:.3f}", k=batch["k"],
                      alive=int(state.alive.sum()))
      self.write_plots(meta)
    bar.close()
    if meta["phase"] == "final":
      self.final(state, meta, model)
    return self.finish(state, meta, model)

  def subspace_size(self, model, alive, largest: int | None = None) -> int:
    """Ops per choice point of an iteration's samples: the model's largest
    k that fits the budget (or `largest`, if given) under `radars.k`; 1
    for rl / random."""
    if self.method != "radars":
      return 1
    if largest is None:
      # the largest k whose worst case fits the budget, and whose program
      # is not predicted over dnas.max_program_ops
      budget = self.budget * (1.0 - float(self.config.radars.budget_margin))
      largest = model.largest_k(alive, budget,
                                fits=lambda mask: self.predicted_too_large(model, mask) is None)
    k = largest
    cap = self.config.radars.get("k")
    if cap:
      k = min(k, int(cap))
    return max(1, k)

  def alive_fits(self, model, alive) -> bool:
    return model.estimate(alive) <= self.budget * (1.0 - float(self.config.radars.budget_margin))

  def end_iteration(self, state: LoopState, meta, model, ops, batch) -> None:
    it = meta["iteration"]
    rewards = np.array([r["reward"] for r in batch["records"]], np.float32)
    # A subspace shrunk to fit the budget is what was run: learn from that.
    run_ops = np.stack([ops_of(tuple(tuple(a) for a in r["subspace"]), ops.shape[-1])
                        for r in batch["records"]])
    alive = np.asarray(state.alive, bool)
    logp = np.asarray(batch["logp"], np.float32)
    metrics = {}
    if self.method != "random":
      new_logp = np.asarray(ctrl.log_prob_per_point(state.controller.logits, alive,
                                                    run_ops))
      same = np.all(np.sort(np.where(ops < 0, 1 << 20, ops), -1)
                    == np.sort(np.where(run_ops < 0, 1 << 20, run_ops), -1), axis=(1, 2))
      logp = np.where(same[:, None], logp, new_logp)
      # Where nothing was shrunk, learn from the draw order the behaviour
      # log-probabilities belong to (Plackett-Luce depends on it).
      run_ops = np.where(same[:, None, None], ops, run_ops)
      key = jax.random.fold_in(jax.random.fold_in(state.key, it), 10_000)
      state.controller, m = ctrl.controller_update(state.controller, key, run_ops, logp,
                                                   rewards, alive, self.hparams)
      metrics = {name: float(v) for name, v in jax.device_get(m).items()}
    probs = np.asarray(ctrl.policy_probabilities(state.controller, alive))
    if self.method == "radars":
      state.alive = np.asarray(ctrl.prune(state.alive, probs,
                                          float(self.config.controller.prune_threshold)))
    step_bytes = [r["compiled_bytes"] for r in batch["records"]]
    estimates = [r["estimated_bytes"] for r in batch["records"]]
    entry = {
        "iteration": it, "k": int(batch["k"]), "rewards": rewards.tolist(),
        "best_reward": float(meta["best"]["reward"]),
        "alive": state.alive.tolist(), "policy_probs": probs.tolist(),
        "alive_ops": int(state.alive.sum()),
        "step_bytes": int(max(step_bytes)), "estimated_bytes": float(max(estimates)),
        "elapsed_seconds": self.elapsed(meta)}
    entry.update({n: metrics[n] for n in ("entropy", "critic_mean", "critic_spread",
                                          "confidence", "advantage_mean", "critic_loss")
                  if n in metrics})
    meta["history"].append(entry)
    scalars = {"reward_mean": float(rewards.mean()), "reward_max": float(rewards.max()),
               "best_reward": entry["best_reward"], "k": entry["k"],
               "alive_ops": entry["alive_ops"], "step_bytes": entry["step_bytes"],
               "estimated_bytes": entry["estimated_bytes"]}
    scalars.update({n: v for n, v in metrics.items()})
    self.writer.scalars(it, scalars, prefix=f"{self.method}/")
    self.writer.histogram(it, f"{self.method}/alive_per_choice_point", state.alive.sum(-1))
    self.writer.histogram(it, f"{self.method}/rewards", rewards)
    self.writer.flush()

  def final_epochs(self) -> float:
    return float(self.config.radars.get("final_epochs") or self.config.dnas.epochs)

  def final_steps(self) -> int:
    """Steps of the final search (as `Searcher.run_dnas` counts them)."""
    return max(1, int(self.final_epochs() * self.searcher.steps_per_epoch()))

  def final_subspace(self, state: LoopState, model) -> spaces_lib.Subspace:
    """The alive space, cut to the k most probable ops per choice point if
    it does not fit the budget."""
    alive = state.alive
    if not self.alive_fits(model, alive):
      k = self.subspace_size(model, alive)
      top = np.asarray(ctrl.most_likely_subspace(state.controller.logits, jnp.asarray(alive), k))
      alive = self.space.mask_from_subspace(subspace_of(top))
    return self.space.subspace_from_mask(alive)

  def final(self, state: LoopState, meta, model) -> None:
    """One DNAS over `final_subspace` (its step compiled ahead if the last
    iteration queued it)."""
    subspace, compiled, estimate = self.fit_budget(self.final_subspace(state, model), model, meta,
                                                   what="static step, final search",
                                                   steps=self.final_steps())
    epochs = self.final_epochs()
    key = jax.random.fold_in(state.key, 999_999)
    pool = PoolView(state)
    with checkpointing.Checkpointer(self.dnas_ckpt_root / "final", max_to_keep=2) as dnas_ckpt:
      result = self.searcher.run_dnas(
          subspace, float(epochs), key, pool=pool, tag=f"{self.method} final", compiled=compiled,
          checkpoint=(dnas_ckpt, int(self.config.radars.checkpoint_every_steps)))
    meta["final"] = {"subspace": [list(a) for a in subspace], "genotype": result.genotype,
                     "val_accuracy": result.val_accuracy, "estimated_bytes": estimate,
                     "compiled_bytes": compiled.bytes, "steps": result.steps,
                     "alphas": [a.tolist() for a in result.alphas]}
    meta["runs"].append({"iteration": "final", "program": "static",
                         "subspace": [list(a) for a in subspace],
                         "estimated_bytes": estimate, "compiled_bytes": compiled.bytes,
                         "val_accuracy": result.val_accuracy})
    meta["phase"] = "done"
    self.save((meta["iteration"] + 1) * (self.num_samples + 1), state, meta)

  def write_plots(self, meta) -> None:
    from radars_jax import report  # pylint: disable=import-outside-toplevel
    try:
      (self.path / "plots").mkdir(exist_ok=True)
      report.plot_history(meta["history"], self.summary_stub(), self.path / "plots")
    except Exception as e:  # pylint: disable=broad-except  # a plot never stops a search
      print(f"radars_jax: warning: plots not written ({e})", flush=True)

  def summary_stub(self) -> dict:
    return {"choice_points": [cp.name for cp in self.space.choice_points],
            "space_ops": list(self.space.op_names), "memory_budget_bytes": self.budget}

  def finish(self, state: LoopState, meta, model) -> dict:
    final = meta.get("final")
    best = meta["best"]
    if final is not None:
      genotype, val_accuracy = final["genotype"], final["val_accuracy"]
    else:
      genotype, val_accuracy = best["genotype"], best["val_accuracy"]
    runs = meta["runs"]
    clock = self.clock_seconds()
    # (the cost model estimates static programs: shared ones are left out)
    errors = [abs(r["estimated_bytes"] / r["compiled_bytes"] - 1.0) for r in runs
              if r.get("compiled_bytes") and not r.get("degenerate")
              and r.get("program", "static") == "static"]
    summary = {
        "method": self.method, "mode": self.searcher.mode, "space": self.space.name,
        "dataset": self.data.name, "seed": int(self.config.seed), "genotype": genotype,
        "val_accuracy": val_accuracy,
        "search_seconds": self.elapsed(meta),
        # from the start of the search to its first train step (None: the
        # whole space fit the budget, nothing was sampled)
        "first_train_step_seconds": meta.get("first_train_step_seconds"),
        # train-step compiles (some ahead, in the background) and the part of
        # them the loop waited for
        "compile_seconds": meta["compile_seconds"],
        "compile_wait_seconds": meta.get("compile_wait_seconds", 0.0),
        # each of them: what, compile seconds, seconds waited, bytes
        "compiles": meta.get("compiles", []),
        # every program of the search: trace / lower / xla seconds
        "compile_breakdown_seconds": clock,
        "compile_total_seconds": sum(clock.values()),
        # the loop's own compiles (any program) and its waits for those
        # compiled in the background: the wall time compiling cost
        "compile_loop_seconds": (self._loop_clock_before + self.clock.opener_seconds
                                 + sum(c["waited_seconds"] for c in meta.get("compiles", [])
                                       if c.get("ahead"))),
        "step_bytes": int(max((r["compiled_bytes"] for r in runs), default=0)),
        "memory_budget_bytes": self.budget,
        "over_budget_steps": sum(1 for r in runs if self.budget and
                                 r["compiled_bytes"] > self.budget),
        # subspace runs on a shared program (one per k) / on their own
        "shared_program_runs": sum(1 for r in runs if r.get("program") == "shared"),
        "static_program_runs": sum(1 for r in runs if r.get("program", "static") == "static"),
        # |estimate / compiled - 1| over the subspaces run (degenerate ones,
        # whose estimate is only an upper bound, left out)
        "max_estimate_error": max(errors) if errors else None,
        "median_estimate_error": float(np.median(errors)) if errors else None,
        "iterations": meta["iteration"], "subspace_runs": runs,
        # (None when the whole space fit the budget: nothing was sampled)
        "best_sample": (None if best is None else
                        {k: v for k, v in best.items() if k != "genotype"}),
        "alive": state.alive.tolist(),
        "alive_ops_per_choice_point": state.alive.sum(-1).tolist(),
        "cost_model": {"slope": model.slope, "intercept": model.intercept,
                       "points": len(model.points)},
        "devices": int(self.mesh.devices.size),
        "choice_points": [cp.name for cp in self.space.choice_points],
        "space_ops": list(self.space.op_names),
    }
    if final is not None:
      summary["subspace"] = final["subspace"]
      summary["alphas"] = final["alphas"]
    self.writer.close()
    workdir_lib.write_json(self.path / "genotype.json", genotype)
    workdir_lib.write_json(self.path / "history.json", {"iterations": meta["history"]})
    workdir_lib.write_json(self.path / "summary.json", summary)
    self.ckpt.close()
    self.write_plots(meta)
    from radars_jax import report  # pylint: disable=import-outside-toplevel
    report.write_report(self.path)
    return summary


def run(config, path: Path, space: spaces_lib.SearchSpace) -> dict:
  """`method=radars|rl|random` in workdir `path` (resumes if it holds a
  checkpoint of the same search)."""
  return RadarsSearch(config, path, space).run()
