"""Per-channel window ops: every implementation gives XLA's numbers and
gradients."""
import chex
import jax
import jax.numpy as jnp
import pytest

from radars_jax.nas import depthwise


def _grads(fn, *args):
  """Value and gradients of sum(fn(...) * r) for a fixed random cotangent r."""
  out = fn(*args)
  r = jax.random.normal(jax.random.key(7), out.shape)
  grads = jax.grad(lambda *a: jnp.sum(fn(*a) * r), argnums=tuple(range(len(args))))(*args)
  return out, grads


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 2, 1), (3, 1, 2), (5, 2, 2)])
def test_shifted_depthwise_conv_matches_xla_values_and_gradients(k, stride, dilation):
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 3))
  conv = lambda impl_: (lambda x_, k_: depthwise.depthwise_conv2d(x_, k_, stride, dilation,
                                                                  impl=impl_))
  want, want_g = _grads(conv("xla"), x, kernel)
  got, got_g = _grads(conv("shifted"), x, kernel)
  chex.assert_trees_all_close((got, got_g), (want, want_g), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", [1, 2])
def test_shifted_pooling_matches_xla_values_and_gradients(kind, stride):
  # Integers with ties: max pooling's gradient must go to the first maximum
  # of each window, as XLA's select_and_scatter does.
  x = jnp.round(jax.random.normal(jax.random.key(0), (2, 7, 8, 3)) * 2)
  pool = {"max": depthwise.max_pool2d, "avg": depthwise.avg_pool2d}[kind]
  # Under jit, as in a train step (reduce_window needs a constant init there).
  want = jax.jit(lambda x_: _grads(lambda y: pool(y, 3, stride, impl="xla"), x_))(x)
  got = jax.jit(lambda x_: _grads(lambda y: pool(y, 3, stride, impl="shifted"), x_))(x)
  chex.assert_trees_all_close(got, want, atol=1e-5)


def test_shifted_conv_has_second_derivatives_for_unrolled_darts():
  """Second-order DARTS differentiates a gradient: the hand-written backward
  pass must itself be differentiable (reverse over reverse)."""
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 2))

  def gnorm(impl):
    def f(k_):
      g = jax.grad(lambda x_: jnp.sum(jnp.sin(
          depthwise.depthwise_conv2d(x_, k_, 1, 1, impl=impl))))(x)
      return jnp.sum(g ** 2)
    return jax.grad(f)(kernel)

  chex.assert_trees_all_close(gnorm("shifted"), gnorm("xla"), atol=1e-4, rtol=1e-4)


def test_unknown_implementation_is_refused():
  with pytest.raises(ValueError, match="unknown depthwise implementation"):
    depthwise.depthwise_conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="fft")
