"""A search's time limit (`search.max_seconds`).

A search past its limit stops where it stands and says so: the RADARS
loop (`radars`, `rl`, `random`) before its next sample, a DNAS run at its
next log step (`log_every`), each after writing the checkpoint a rerun
resumes from. Its summary.json then has `"stopped": "time"` and what was
done by then (`stopped_summary`). Rerun the command with a larger limit
to go on; the seconds a resumed search has already spent count towards it.
"""
from __future__ import annotations

import dataclasses
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


NO_LIMIT = TimeLimit(None, lambda: 0.0)


def stopped_summary(config, space_name: str, dataset: str, elapsed: float, reason: str,
                    **done) -> dict:
  """summary.json of a search its time limit stopped: what it is, why it
  stopped, and `done` (how far it got)."""
  return {"method": config.method, "space": space_name, "dataset": dataset,
          "seed": int(config.seed), "stopped": "time", "stop_reason": reason,
          "max_seconds": float(config.search.max_seconds), "search_seconds": elapsed,
          "genotype": None, **done}
