"""How much of a search goes to compiling, from JAX's own events.

Every `jax.jit` program is traced to a jaxpr, lowered to StableHLO and
compiled by XLA; JAX reports the duration of each stage through
`jax.monitoring`. A `CompileClock` adds them up while it is open, for every
program (train steps, evaluators, the controller, small eager ops) and from
every thread (steps compiled ahead in the background included):

    with compile_clock.CompileClock() as clock:
      ...  # the search
    clock.seconds  # {"trace": ..., "lower": ..., "xla": ...}
    clock.opener_seconds  # of those, on the thread that opened it

`opener_seconds` is the time the opening thread (a search loop) spent
compiling rather than running; compiles in other threads (ahead, in the
background) add to `seconds` only.

Compiles served by the persistent compilation cache count only their
tracing and lowering.
"""
from __future__ import annotations

import threading

import jax

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "xla",
}


class CompileClock:
  """Seconds spent tracing, lowering and XLA-compiling while open."""

  def __init__(self):
    self._lock = threading.Lock()
    self.seconds = {stage: 0.0 for stage in EVENTS.values()}
    self.opener_seconds = 0.0   # all stages, on the thread that opened the clock
    self.programs = 0   # XLA compiles seen
    self._opener = None

  def _record(self, event: str, duration: float, **_) -> None:
    stage = EVENTS.get(event)
    if stage is None:
      return
    with self._lock:
      self.seconds[stage] += float(duration)
      self.programs += stage == "xla"
      if threading.get_ident() == self._opener:
        self.opener_seconds += float(duration)

  @property
  def total(self) -> float:
    with self._lock:
      return sum(self.seconds.values())

  def __enter__(self) -> "CompileClock":
    self._opener = threading.get_ident()
    jax.monitoring.register_event_duration_secs_listener(self._record)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._record)
