"""The state of a RADARS loop (`radars_jax.radars.loop`) as typed records.

Two parts, checkpointed together after every scored sample:
  * `LoopState`: the arrays (weight pool, controller, alive set, PRNG key),
    saved as one pytree;
  * `SearchRecord`: everything else (where the loop is, what it has run,
    what it compiled, the cost model, the best sample, ...), saved as the
    checkpoint's JSON metadata through `to_json` / `from_json`, so that a
    resumed search continues exactly where the checkpoint left it.

The JSON form keeps the flat keys the checkpoints have always had, so a
checkpoint written before these records existed still resumes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from radars_jax import compile_clock
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import weight_pool as pool_lib


# ---------------------------------------------------------------------------
# The arrays
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class LoopState:
  """The arrays of the search (checkpointed as one pytree).

  pool: {param path: float32 array} every op's weights in the full space;
  trained: {param path: bool array ()} whether the pool entry was trained
  (untrained entries start from their fresh initialisation);
  controller: ctrl.ControllerState; alive: bool [C, M]; key: PRNG key;
  pending, pending_trained: with `radars.fair_pool`, the weights this
  iteration's samples wrote back, held apart until the iteration ends
  (`merge_pending`) so that every sample of an iteration starts from the
  same pool (None without)."""
  pool: dict
  trained: dict
  controller: Any
  alive: np.ndarray
  key: jax.Array
  pending: dict | None = None
  pending_trained: dict | None = None

  def tree(self):
    tree = {"pool": self.pool, "trained": self.trained, "controller": self.controller,
            "alive": self.alive, "key": self.key}
    if self.pending is not None:
      tree.update(pending=self.pending, pending_trained=self.pending_trained)
    return tree

  @classmethod
  def from_tree(cls, t) -> "LoopState":
    # An uncommitted key (as a fresh one is), so that it may meet arrays
    # sharded over every device.
    key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(t["key"])))
    return cls(t["pool"], t["trained"], t["controller"], np.asarray(t["alive"], bool), key,
               t.get("pending"), t.get("pending_trained"))

  def merge_pending(self) -> None:
    """The iteration's write-backs into the pool, in the order the samples
    ran (a later sample's weight replaces an earlier one's)."""
    if self.pending is None:
      return
    for path, written in self.pending_trained.items():
      if bool(written):
        self.pool[path] = self.pending[path]
        self.trained[path] = np.asarray(True)
        self.pending_trained[path] = np.asarray(False)


class PoolView(pool_lib.WeightPool):
  """A `WeightPool` over the fixed full-space arrays of a LoopState: only
  trained entries are read (`select`), and what is written back
  (`write_back`) is marked trained: in the pool, or with `fair_pool` in
  `pending` (read by the next iteration)."""

  def __init__(self, state: LoopState, similarity: bool = False):
    super().__init__(similarity=similarity)
    self.state = state

  def stored(self, path: str):
    return self.state.pool[path] if bool(self.state.trained.get(path, False)) else None

  def trained_paths(self) -> list[str]:
    return [path for path, trained in self.state.trained.items() if bool(trained)]

  def store(self, path: str, value) -> None:
    pool, trained = ((self.state.pool, self.state.trained) if self.state.pending is None
                     else (self.state.pending, self.state.pending_trained))
    if path in pool:
      pool[path] = np.asarray(value, np.float32)
      trained[path] = np.asarray(True)


def subspace_of(ops_row) -> spaces_lib.Subspace:
  """Controller sample int [C, k] (-1 = empty slot) -> Subspace."""
  return tuple(tuple(sorted(int(o) for o in row if o >= 0)) for row in np.asarray(ops_row))


def ops_of(subspace: spaces_lib.Subspace, k: int) -> np.ndarray:
  """Subspace -> int [C, k] (-1 padded)."""
  out = -np.ones((len(subspace), k), np.int32)
  for c, active in enumerate(subspace):
    out[c, :len(active)] = active[:k]
  return out


# ---------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Batch:
  """One iteration's samples: `ops` int [P, C, k] (-1 = empty slot), their
  behaviour log-probabilities `logp` [P, C], their `k`, and the run records
  of those scored so far (in order)."""
  ops: np.ndarray
  logp: np.ndarray
  k: int
  records: list = dataclasses.field(default_factory=list)

  def subspace(self, index: int) -> spaces_lib.Subspace:
    return subspace_of(self.ops[index])

  def to_json(self) -> dict:
    return {"ops": self.ops.tolist(), "logp": self.logp.tolist(), "k": self.k,
            "records": self.records}

  @classmethod
  def from_json(cls, d: dict) -> "Batch":
    return cls(np.asarray(d["ops"], np.int32), np.asarray(d["logp"], np.float32), int(d["k"]),
               list(d["records"]))


@dataclasses.dataclass
class CompileLog:
  """The loop's train-step compiles: seconds compiling, seconds the loop
  waited for them, and one record each (what, its seconds, bytes and XLA
  operations, whether it was compiled ahead in the background)."""
  seconds: float = 0.0
  wait_seconds: float = 0.0
  records: list = dataclasses.field(default_factory=list)

  def count(self, compiled, start: float, what: str, ahead: bool = False):
    """Adds `compiled` (waited for since `start`); returns it."""
    waited = time.perf_counter() - start
    self.seconds += compiled.seconds
    self.wait_seconds += waited
    self.records.append(
        {"what": what, "compile_seconds": round(compiled.seconds, 3),
         "waited_seconds": round(waited, 3), "bytes": int(compiled.bytes), "ops": compiled.ops,
         "ahead": ahead})
    return compiled

  def waited_ahead_seconds(self) -> float:
    """Seconds the loop waited for steps compiled in the background."""
    return sum(c["waited_seconds"] for c in self.records if c.get("ahead"))


@dataclasses.dataclass
class SharedDecisions:
  """Whether the samples of k ops run on the shared program (one switched
  supernet per k): `fits` {"k,steps": its bytes fit the budget}, and
  `program_ops`, the size of a shared program refused for being over
  `dnas.max_program_ops` (refused for one k, refused for all). Kept so that
  a resumed search decides as the uninterrupted one did."""
  fits: dict = dataclasses.field(default_factory=dict)
  program_ops: int | None = None


@dataclasses.dataclass
class SearchRecord:
  """Everything of a search but its arrays (JSON in every checkpoint).

  Loop position: `phase` ("loop", "final", "done"), `iteration`, `sample`
  (the next one of `batch`), `batch` (None between iterations). What has
  happened: `history` (one entry per iteration), `runs` (every DNAS run),
  `best` (the best-rewarded sample's record), `final` (the final search's
  result). How: `cost_model` (its JSON), `compiles`, `shared`,
  `first_train_step_seconds`. Time of earlier runs of the search (a resumed
  one adds to them): `elapsed_seconds`, `clock_seconds` (trace / lower /
  XLA of every compile), `loop_clock_seconds` (compiles on the loop's
  thread)."""
  phase: str = "loop"
  iteration: int = 0
  sample: int = 0
  batch: Batch | None = None
  history: list = dataclasses.field(default_factory=list)
  runs: list = dataclasses.field(default_factory=list)
  best: dict | None = None
  final: dict | None = None
  cost_model: dict | None = None
  compiles: CompileLog = dataclasses.field(default_factory=CompileLog)
  shared: SharedDecisions = dataclasses.field(default_factory=SharedDecisions)
  first_train_step_seconds: float | None = None
  elapsed_seconds: float = 0.0
  clock_seconds: dict = dataclasses.field(default_factory=dict)
  loop_clock_seconds: float = 0.0

  def to_json(self) -> dict:
    out = {"phase": self.phase, "iteration": self.iteration, "sample": self.sample,
           "batch": None if self.batch is None else self.batch.to_json(),
           "history": self.history, "runs": self.runs, "best": self.best,
           "cost_model": self.cost_model,
           "compile_seconds": self.compiles.seconds,
           "compile_wait_seconds": self.compiles.wait_seconds,
           "compiles": self.compiles.records,
           "shared_fits": self.shared.fits,
           "elapsed_seconds": self.elapsed_seconds, "clock_seconds": self.clock_seconds,
           "loop_clock_seconds": self.loop_clock_seconds}
    # (absent until known, as in checkpoints written before these records)
    for name, value in (("shared_program_ops", self.shared.program_ops),
                        ("first_train_step_seconds", self.first_train_step_seconds),
                        ("final", self.final)):
      if value is not None:
        out[name] = value
    return out

  @classmethod
  def from_json(cls, meta: dict) -> "SearchRecord":
    batch = meta.get("batch")
    return cls(
        phase=meta["phase"], iteration=int(meta["iteration"]), sample=int(meta["sample"]),
        batch=None if batch is None else Batch.from_json(batch),
        history=list(meta["history"]), runs=list(meta["runs"]), best=meta.get("best"),
        final=meta.get("final"), cost_model=meta.get("cost_model"),
        compiles=CompileLog(float(meta.get("compile_seconds", 0.0)),
                            float(meta.get("compile_wait_seconds", 0.0)),
                            list(meta.get("compiles", []))),
        shared=SharedDecisions(dict(meta.get("shared_fits") or {}),
                               meta.get("shared_program_ops") or None),
        first_train_step_seconds=meta.get("first_train_step_seconds"),
        elapsed_seconds=float(meta.get("elapsed_seconds", 0.0)),
        clock_seconds=dict(meta.get("clock_seconds") or {}),
        loop_clock_seconds=float(meta.get("loop_clock_seconds", 0.0)))


class SearchTime:
  """Wall and compile time of a search over all its runs: what `record`
  (restored from a checkpoint, or fresh) counted before this run, plus
  this run's (`clock` is open around it)."""

  def __init__(self, clock: compile_clock.CompileClock, start: float):
    self.clock, self.start = clock, start
    self.before = SearchRecord()

  def resume_from(self, record: SearchRecord) -> None:
    self.before = SearchRecord(elapsed_seconds=record.elapsed_seconds,
                               clock_seconds=dict(record.clock_seconds),
                               loop_clock_seconds=record.loop_clock_seconds)

  def elapsed(self) -> float:
    return self.before.elapsed_seconds + time.perf_counter() - self.start

  def clock_seconds(self) -> dict:
    """Tracing, lowering and XLA seconds of every compile so far."""
    return {stage: self.before.clock_seconds.get(stage, 0.0) + seconds
            for stage, seconds in dict(self.clock.seconds).items()}

  def loop_clock_seconds(self) -> float:
    """Compiling seconds on the loop's thread."""
    return self.before.loop_clock_seconds + self.clock.opener_seconds

  def stamped(self, record: SearchRecord) -> SearchRecord:
    """`record` with the times so far (as a checkpoint saves it)."""
    return dataclasses.replace(record, elapsed_seconds=self.elapsed(),
                               clock_seconds=self.clock_seconds(),
                               loop_clock_seconds=self.loop_clock_seconds())
