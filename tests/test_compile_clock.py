"""CompileClock adds up JAX's trace / lower / XLA compile events while open,
from every thread (and apart, those of the thread that opened it), and
nothing after it is closed."""
import threading
import time

import jax
import jax.numpy as jnp
import pytest

from radars_jax import compile_clock


def _fresh_program(scale):
  # a new closure each call: a new program for jit to trace and compile
  return jax.jit(lambda x: jnp.tanh(x * scale).sum())


def test_counts_compiles_from_every_thread_and_only_while_open():
  x = jnp.ones((4, 4))
  # An independent tally of the same JAX events, kept by this test.
  mine = {stage: 0.0 for stage in compile_clock.EVENTS.values()}

  def tally(event, duration, **_):
    if event in compile_clock.EVENTS:
      mine[compile_clock.EVENTS[event]] += duration

  jax.monitoring.register_event_duration_secs_listener(tally)
  try:
    start = time.perf_counter()
    with compile_clock.CompileClock() as clock:
      _fresh_program(2.0)(x).block_until_ready()
      own = clock.opener_seconds
      assert own > 0 and own == clock.total   # (all of it so far on this thread)
      worker = threading.Thread(target=lambda: _fresh_program(3.0)(x).block_until_ready())
      worker.start()
      worker.join()
      assert clock.programs >= 2
      # the worker's compile counts in the stages, not in this thread's time
      assert clock.opener_seconds == own < clock.total
      assert clock.seconds["xla"] > 0 and clock.seconds["trace"] > 0
    wall = time.perf_counter() - start
  finally:
    jax.monitoring.unregister_event_duration_listener(tally)
  for stage, seconds in mine.items():
    assert clock.seconds[stage] == pytest.approx(seconds, rel=1e-9, abs=1e-12), stage
  assert clock.total == pytest.approx(sum(mine.values()))
  assert clock.total <= wall   # the compiles ran one after the other inside the block
  closed = dict(clock.seconds), clock.programs
  _fresh_program(4.0)(x).block_until_ready()
  assert (dict(clock.seconds), clock.programs) == closed
