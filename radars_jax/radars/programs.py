"""The train steps of the RADARS loop, within the memory budget and the
program size limit.

Every subspace the loop trains (a sample, the final search) runs on one
compiled train step whose exact bytes are within `memory_budget_gb`:
  * the shared program of its k (`radars.shared_programs`: a switched
    supernet compiled once per k, `shared_step`), where that fits the
    budget and `dnas.max_program_ops`;
  * else its own static program, shrunk op by op until it fits
    (`fit_budget`).
The cost model (`radars_jax.radars.cost_model`) predicts bytes and program sizes:
`calibrate` anchors it on real compiles, `Sizing` picks each iteration's
k from it, and a program predicted over `dnas.max_program_ops`
is refused without being traced (`predicted_too_large`).

Programs the loop will need next are compiled in the background
(`radars_jax.radars.compile_queue`, `radars.compile_ahead`); every compile the loop
takes is counted in the search record's `CompileLog`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from radars_jax.radars import compile_queue as queue_lib
from radars_jax.radars import controller as ctrl
from radars_jax.radars import ppo
from radars_jax.radars import cost_model as cost_lib
from radars_jax.dnas import steps as dnas_lib
from radars_jax import measurements as measurements_lib
from radars_jax import memory as memory_lib
from radars_jax.dnas import search as search_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.errors import UserError
from radars_jax.radars.state import SearchRecord


# ---------------------------------------------------------------------------
# Sizes predicted by the cost model
# ---------------------------------------------------------------------------

def predicted_too_large(config, model: cost_lib.CostModel, mask,
                        margin: float = 1.0) -> dnas_lib.ProgramTooLarge | None:
  """The refusal of the train step of `mask` if `model` predicts more than
  `margin` x `dnas.max_program_ops` XLA operations for it (nothing is
  traced), else None."""
  limit = config.dnas.max_program_ops
  predicted = model.program_ops(mask)
  if limit and predicted is not None and predicted > margin * int(limit):
    return dnas_lib.ProgramTooLarge(int(predicted), int(limit), estimated=True)
  return None


def shared_predicted_too_large(config, space: spaces_lib.SearchSpace,
                               model: cost_lib.CostModel) -> dnas_lib.ProgramTooLarge | None:
  """`predicted_too_large` for the shared program (every op of the space).
  Its switched choice points are not the static programs the prediction is
  fitted to (scanned, they compile to fewer operations per op), so it is
  refused untraced only beyond 3x the limit."""
  full = space.mask_from_subspace(space.full_subspace())
  return predicted_too_large(config, model, full, margin=3.0)


@dataclasses.dataclass(frozen=True)
class Sizing:
  """The sizes of the loop's pieces: each iteration's k (from the cost
  model and the budget), whether the alive space fits, the runs' lengths.
  `budget`: bytes per step (None: no budget); `steps_per_epoch`: of a DNAS
  run (`Searcher.steps_per_epoch`)."""
  config: Any
  budget: float | None
  steps_per_epoch: int

  def usable_budget(self) -> float:
    """The budget less `radars.budget_margin` (what sizing aims for)."""
    return self.budget * (1.0 - float(self.config.radars.budget_margin))

  def alive_fits(self, model: cost_lib.CostModel, alive) -> bool:
    """Whether the whole alive space is estimated to fit the budget."""
    return model.estimate(alive) <= self.usable_budget()

  def subspace_size(self, model: cost_lib.CostModel, alive, largest: int | None = None) -> int:
    """Ops per choice point of an iteration's samples: the model's largest
    k that fits the budget (or `largest`, if given) under `radars.k`; 1 for
    rl / random."""
    config = self.config
    if config.method != "radars":
      return 1
    if largest is None:
      # the largest k whose worst case fits the budget, and whose program
      # is not predicted over dnas.max_program_ops
      largest = model.largest_k(
          alive, self.usable_budget(),
          fits=lambda mask: predicted_too_large(config, model, mask) is None)
    k = largest
    cap = config.radars.k
    if cap:
      k = min(k, int(cap))
    return max(1, k)

  def run_steps(self) -> int:
    """Steps of a sample's DNAS run."""
    return max(1, int(float(self.config.radars.subspace_epochs) * self.steps_per_epoch))

  def final_epochs(self) -> float:
    return float(self.config.radars.final_epochs or self.config.dnas.epochs)

  def final_steps(self) -> int:
    """Steps of the final search (as `Searcher.run_dnas` counts them)."""
    return max(1, int(self.final_epochs() * self.steps_per_epoch))


# ---------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------

class LoopPrograms:
  """The loop's compiled train steps: static ones per subspace, shared ones
  per k (cached for the process), those queued ahead in `queue`."""

  def __init__(self, config, searcher: search_lib.Searcher, budget: float | None,
               queue: queue_lib.CompileQueue):
    self.config, self.searcher, self.budget, self.queue = config, searcher, budget, queue
    self.space = searcher.space
    self._shared: dict = {}   # (k, steps) -> the switched supernet's compiled step
    self._groups: dict = {}   # (k, steps) -> its group step, or None (over the budget)

  def compile_static_now(self, subspace, steps: int, bytes_only: bool = False):
    """Compiles the static train step of `subspace` for a run of `steps`
    (`bytes_only`: it will not run, `dnas.bytes_only_compiler_options`)."""
    program = self.searcher.program(subspace, steps)
    compiled, _ = search_lib.compile_subspace_step(program, subspace,
                                                   self.searcher.data.image_shape,
                                                   self.searcher.batch_size, bytes_only)
    return compiled

  def compile_shared_now(self, k: int, steps: int):
    """Compiles the switched supernet's train step for subspaces of at most
    `k` ops per choice point."""
    program = self.searcher.shared.program(k, steps)
    return self.searcher.shared.compile_step(program, k)

  def compile(self, subspace, record: SearchRecord, steps: int = 1, bytes_only: bool = False,
              what: str = "static step"):
    """The compiled train step of `subspace` (from the queue if it was
    queued), counted in `record.compiles` as `what`."""
    start = time.perf_counter()
    future = self.queue.get(("static", subspace, steps))
    if future is not None:
      compiled = future.result()
    else:
      compiled = self.compile_static_now(subspace, steps, bytes_only)
    return record.compiles.count(compiled, start, what, ahead=future is not None)

  def compile_shared(self, k: int, steps: int, record: SearchRecord):
    """The shared train step of `k` (compiled once per search and process;
    from the queue if it was queued), counted in `record.compiles`."""
    if (k, steps) not in self._shared:
      start = time.perf_counter()
      future = self.queue.take(("shared", k, steps))
      compiled = future.result() if future is not None else self.compile_shared_now(k, steps)
      batches = self.queue.take(("batches",))
      if batches is not None:
        batches.result()   # (queued right after it: the loop would compile them again)
      self._shared[(k, steps)] = record.compiles.count(
          compiled, start, f"shared step, {k} ops per choice point", ahead=future is not None)
    return self._shared[(k, steps)]

  # -- queued ahead ----------------------------------------------------------
  def queue_static(self, subspaces, steps: int) -> None:
    """Queues the static train steps of `subspaces`, in order: each compiles
    while the samples before it train."""
    for subspace in subspaces:
      self.queue.put(("static", subspace, steps), self.compile_static_now, subspace, steps)

  def queue_shared(self, model: cost_lib.CostModel, k: int, steps: int) -> None:
    """Queues the shared program of `k` (shared programs on, and its size
    not predicted over the limit). The traced `model` has ordered the
    slots, so it need not wait for calibration; where the calibrated model
    sizes another k, the loop compiles that one and this one is never
    used."""
    if not self.searcher.switched or not self.queue.enabled:
      return
    if shared_predicted_too_large(self.config, self.space, model) is not None:
      return
    self.queue.put(("shared", k, steps), self.compile_shared_now, k, steps)
    # (then the batch programs the first train step needs, and the
    # evaluator every sample's genotype is scored with)
    self.queue.put(("batches",), self.searcher.compile_batches)
    self.queue.put(("evaluator",), self.searcher.shared.compile_evaluator)

  def queue_controller_update(self, controller_state, num_samples: int, k: int,
                              hparams: ctrl.ControllerHParams) -> None:
    """Queues the controller update (once per process), so the first
    iteration's end does not wait for its compile."""
    self.queue.put(("controller",), ppo.compile_update, controller_state, num_samples, k,
                   hparams)

  def close(self) -> None:
    self.queue.close()

  # -- which program ---------------------------------------------------------
  def shared_step(self, k: int, steps: int, record: SearchRecord, model: cost_lib.CostModel):
    """The shared program the samples of `k` ops run on, or None (shared
    programs off, its bytes over the budget or its size over
    `dnas.max_program_ops`: each sample compiles its own). The decision is
    kept in `record.shared`, so a resumed search makes the same one."""
    if not self.searcher.switched:
      return None
    decided = record.shared
    key = f"{k},{steps}"
    if key not in decided.fits:
      # (its size does not depend on k: refused for one k, refused for all)
      predicted = shared_predicted_too_large(self.config, self.space, model)
      ops = (decided.program_ops or (predicted.ops if predicted else 0)
             or self._shared_refused_ahead())
      if not ops:
        try:
          compiled = self.compile_shared(k, steps, record)
        except dnas_lib.ProgramTooLarge as e:
          ops = e.ops
      if ops:
        if not decided.program_ops:
          about = "about " if predicted else ""
          print(f"radars_jax: the shared program has {about}{ops:,} XLA operations, more than "
                f"dnas.max_program_ops={self.config.dnas.max_program_ops:,}: each sample "
                "compiles its own", flush=True)
        decided.program_ops = ops
        decided.fits[key] = False
        return None
      decided.fits[key] = self.budget is None or compiled.bytes <= self.budget
    return self.compile_shared(k, steps, record) if decided.fits[key] else None

  def group_step(self, k: int, steps: int, record: SearchRecord, model: cost_lib.CostModel):
    """The group step of `k` (`radars.devices_per_sample`: the samples of
    an iteration trained at the same time, one per row of the sample
    mesh), or None: parallel samples off, no shared program for `k`
    (`shared_step`), or the group step's bytes per device over the budget
    (each row splits its batch over fewer devices than the shared step;
    said once): the samples train one after another."""
    if not int(self.config.radars.devices_per_sample):
      return None
    if self.shared_step(k, steps, record, model) is None:
      return None
    if (k, steps) not in self._groups:
      start = time.perf_counter()
      shared = self.searcher.shared
      compiled = record.compiles.count(
          shared.compile_group_step(shared.program(k, steps), k), start,
          f"group step, {k} ops per choice point")
      if self.budget is not None and compiled.bytes > self.budget:
        print(f"radars_jax: {compiled.samples} samples at once need "
              f"{memory_lib.format_gb(compiled.bytes)} per device, budget "
              f"{memory_lib.format_gb(self.budget)}: they train one after another",
              flush=True)
        compiled = None
      self._groups[(k, steps)] = compiled
    return self._groups[(k, steps)]

  def _shared_refused_ahead(self) -> int:
    """The operations of a shared program the queue refused
    (`dnas.ProgramTooLarge`), else 0; waits for the queued ones."""
    for future in self.queue.queued("shared"):
      if isinstance(future.exception(), dnas_lib.ProgramTooLarge):
        return future.exception().ops
    return 0

  def fit_budget(self, subspace, model: cost_lib.CostModel, record: SearchRecord, k: int,
                 steps: int, what: str = "static step"):
    """The shared program of `k` ops per choice point if it fits the budget
    (`k` > 0, `shared_step`); else compile `subspace`, and while its exact
    bytes exceed the budget, drop its costliest op at the choice point where
    that op costs most (never the last op of a choice point). Returns
    (subspace, compiled, estimate); `what` names its compiles; `steps` is
    the length of the run (its learning-rate schedule is compiled in)."""
    shared = self.shared_step(k, steps, record, model) if k else None
    if shared is not None:
      return subspace, shared, model.estimate(self.space.mask_from_subspace(subspace))
    while True:
      mask = self.space.mask_from_subspace(subspace)
      estimate = model.estimate(mask)
      # (a program predicted over dnas.max_program_ops is not even traced,
      # unless it was queued)
      refusal = (predicted_too_large(self.config, model, mask)
                 if self.queue.get(("static", subspace, steps)) is None else None)
      if refusal is not None:
        compiled = None   # shrunk like a step over the budget
      else:
        try:
          compiled = self.compile(subspace, record, steps, what=what)
        except dnas_lib.ProgramTooLarge as too_large:
          compiled, refusal = None, too_large
        else:
          model.add_point(mask, compiled.bytes, compiled.ops)
          if self.budget is None or compiled.bytes <= self.budget:
            return subspace, compiled, estimate
      subspace = without_costliest_op(subspace, mask, model, self.budget, compiled, refusal)


def without_costliest_op(subspace, mask, model: cost_lib.CostModel, budget, compiled, refusal):
  """`subspace` less its costliest op where a choice point has more than
  one (`LoopPrograms.fit_budget`); raises `refusal` (no `compiled` step)
  or a UserError where none has."""
  cost = np.where(mask & (mask.sum(-1, keepdims=True) > 1), model.per_op, -np.inf)
  if not np.isfinite(cost).any():
    if compiled is None:
      raise refusal
    raise UserError(
        f"one op per choice point needs {memory_lib.format_gb(compiled.bytes)} per step, "
        f"budget {memory_lib.format_gb(budget)}: raise memory_budget_gb or make the "
        "supernet smaller (supernet.channels, supernet.layers, data.batch_size)")
  c, o = np.unravel_index(np.argmax(cost), cost.shape)
  return tuple(tuple(x for x in active if not (i == c and x == o))
               for i, active in enumerate(subspace))


def calibrate(programs: LoopPrograms, sizing: Sizing, model: cost_lib.CostModel, alive,
              record: SearchRecord,
              measured: measurements_lib.Measurements = measurements_lib.Measurements(None),
              measured_inputs=None) -> None:
  """Calibrates `model` on real compiles: the worst cases at k = 1 and at
  the k the uncalibrated model would choose (at least 2), unless the first
  compile's size predicts the second over `dnas.max_program_ops`. Only
  their bytes are read (they never run), so they compile without kernel
  optimisation; where `measured` holds a compile's bytes and operations
  from a run of the same search (`measured_inputs`), it is not compiled
  again. Meanwhile the shared program of the first iteration's likely k
  compiles in the background."""
  config, budget, space = programs.config, programs.budget, programs.space
  most = int(np.asarray(alive).sum(-1).max())
  k_guess = min(max(2, model.largest_k(alive, budget) if budget else 2), most)
  k_ahead = sizing.subspace_size(model, alive, largest=k_guess)
  for k in sorted({1, k_guess}):
    mask = model.worst_case(alive, k)
    if k > 1 and predicted_too_large(config, model, mask) is not None:
      continue
    inputs = {"search": measured_inputs, "mask": np.asarray(mask).tolist()}
    point = measured.lookup("calibration", inputs)
    if point is None:
      try:
        compiled = programs.compile(space.subspace_from_mask(mask), record, bytes_only=True,
                                    what=f"calibration, worst case of {k} op{'s' * (k > 1)} "
                                    "(bytes only)")
      except dnas_lib.ProgramTooLarge:
        if k == 1:
          raise
        continue
      point = {"bytes": int(compiled.bytes), "ops": int(compiled.ops)}
      measured.store("calibration", inputs, point)
    model.add_point(mask, point["bytes"], point["ops"])
    if k == 1:
      # (queued after the first compile, which has calibrated the
      # prediction of program sizes that may refuse it)
      programs.queue_shared(model, k_ahead, sizing.run_steps())
