"""A search's time limit (`search.max_seconds`).

A search past its limit stops where it stands and says so: the RADARS
loop (`radars`, `rl`, `random`) before its next sample, a DNAS run at its
next log step (`log_every`), each after writing the checkpoint a rerun
resumes from. Its summary.json then has `"stopped": "time"` and what was
done by then (`stopped_summary`). Rerun the command with a larger limit
to go on; the seconds a resumed search has already spent count towards it.

A compile or a train step cannot be interrupted, and one can outlast the
limit by far (a whole-space step at CIFAR's size on a CPU: over 45
minutes). `Watchdog` ends the process `search.overrun_seconds` past the
limit if the search has not stopped by then: it writes the same stopped
summary (the last checkpoint is what a rerun resumes from; the step or
compile under way is lost) and exits with status 0, as a search stopped
at a log step does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from typing import Callable


class TimeLimitReached(Exception):
  """Raised where a search stops for its time limit (its state is
  checkpointed first)."""


@dataclasses.dataclass(frozen=True)
class TimeLimit:
  """`max_seconds` of search (None: no limit) and how many seconds the
  search has spent, over all its runs (`elapsed()`)."""
  max_seconds: float | None
  elapsed: Callable[[], float]

  def reached(self) -> bool:
    return self.max_seconds is not None and self.elapsed() >= self.max_seconds

  def error(self, where: str) -> TimeLimitReached:
    """The exception that stops the search (`where`: what stops)."""
    return TimeLimitReached(f"search.max_seconds={self.max_seconds:g} reached after "
                            f"{self.elapsed():.1f} s, {where}")

  def check(self, where: str) -> None:
    """Raises `error(where)` if the limit is reached."""
    if self.reached():
      raise self.error(where)

  def overrun(self, grace: float) -> bool:
    """Whether the search is `grace` seconds past its limit."""
    return self.max_seconds is not None and self.elapsed() >= self.max_seconds + grace


NO_LIMIT = TimeLimit(None, lambda: 0.0)


def stopped_summary(config, space_name: str, dataset: str, elapsed: float, reason: str,
                    **done) -> dict:
  """summary.json of a search its time limit stopped: what it is, why it
  stopped, and `done` (how far it got)."""
  return {"method": config.method, "space": space_name, "dataset": dataset,
          "seed": int(config.seed), "stopped": "time", "stop_reason": reason,
          "max_seconds": float(config.search.max_seconds), "search_seconds": elapsed,
          "genotype": None, **done}


def seconds_before_stop(workdir) -> float:
  """The seconds of search an earlier run in `workdir` had spent when its
  time limit stopped it (its summary.json; 0 if none stopped): a resumed
  search counts on from them."""
  # (read here, not by `workdir.read_json`: this module stays free of jax,
  # for `main` imports it before jax starts)
  path = os.path.join(str(workdir), "summary.json")
  if not os.path.isfile(path):
    return 0.0
  with open(path) as f:
    earlier = json.load(f)
  return float(earlier["search_seconds"]) if earlier.get("stopped") else 0.0


def end_process(status: int) -> None:
  """Ends this process now, whatever its other threads are doing (a
  compile or a step in progress cannot be interrupted otherwise)."""
  os._exit(status)


def stopped_console(summary: dict, workdir) -> str:
  """What a stopped search prints: why, and how to go on."""
  path = os.path.join(str(workdir), "")
  return (f"radars_jax: {summary['method']} search on {summary['space']} / "
          f"{summary['dataset']} stopped: {summary['stop_reason']}\n"
          f"  resume    rerun the command with a larger --config.search.max_seconds; "
          f"it goes on from {path}checkpoints\n"
          f"  outputs   {path}summary.json")


class Watchdog:
  """While open (a `with` block around a search's training), ends the
  process once the search is `grace` seconds past `limit` without having
  stopped: `write_summary(reason)` writes the stopped summary and returns
  it, `stopped_console` of it is printed, then the process ends
  (`end_process(0)`).
  Leaving the block first (the search ended or stopped itself) disarms it.
  `grace` None, or no limit: does nothing."""

  POLL_SECONDS = 1.0
  WRITE_SECONDS = 60.0   # the longest the summary may take to write

  def __init__(self, limit: TimeLimit, grace: float | None,
               write_summary: Callable[[str], dict], workdir):
    self.limit, self.grace = limit, grace
    self.write_summary, self.workdir = write_summary, workdir
    self._done = threading.Event()
    self._lock = threading.Lock()   # (the search ends, or the watchdog does: not both)
    self._thread = None

  def __enter__(self) -> "Watchdog":
    if self.grace is not None and self.limit.max_seconds is not None:
      self._thread = threading.Thread(target=self._watch, name="search-watchdog", daemon=True)
      self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    with self._lock:
      self._done.set()
    if self._thread is not None:
      self._thread.join()

  def _watch(self) -> None:
    while not self._done.wait(self.POLL_SECONDS):
      if not self.limit.overrun(self.grace):
        continue
      with self._lock:
        if self._done.is_set():
          return
        reason = (f"search.max_seconds={self.limit.max_seconds:g} overrun by "
                  f"search.overrun_seconds={self.grace:g} inside a compile or a train step "
                  f"(after {self.limit.elapsed():.1f} s): the process ended there; a rerun "
                  "resumes from the last checkpoint")
        # (should writing the summary itself hang, the process ends anyway)
        backstop = threading.Timer(self.WRITE_SECONDS, end_process, (0,))
        backstop.daemon = True
        backstop.start()
        summary = self.write_summary(reason)
        print(stopped_console(summary, self.workdir), flush=True)
        sys.stderr.flush()
        end_process(0)
        backstop.cancel()   # (reached only where end_process returns: tests)
        return
