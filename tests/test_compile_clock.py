"""CompileClock adds up JAX's trace / lower / XLA compile events while open,
from every thread (and apart, those of the thread that opened it), and
nothing after it is closed."""
import threading

import jax
import jax.numpy as jnp

from radars_jax import compile_clock


def _fresh_program(scale):
  # a new closure each call: a new program for jit to trace and compile
  return jax.jit(lambda x: jnp.tanh(x * scale).sum())


def test_counts_compiles_from_every_thread_and_only_while_open():
  x = jnp.ones((4, 4))
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
    assert clock.total == sum(clock.seconds.values())
  closed = dict(clock.seconds), clock.programs
  _fresh_program(4.0)(x).block_until_ready()
  assert (dict(clock.seconds), clock.programs) == closed
