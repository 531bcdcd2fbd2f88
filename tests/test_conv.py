"""radars_jax.nas.conv: the switch-friendly dense convolution and the
matmul 1x1 convolution have lax's values, gradients and gradients of
gradients (the first in every case it covers and in the ones it hands
back to lax)."""
import chex
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from radars_jax.nas import conv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 1, 1), (5, 1, 0),   # stride 1
    (1, 1, 0), (1, 2, 0),   # 1x1 (at stride 2: subsample first)
    (3, 2, 1)])             # not covered: lax itself
def test_conv_matches_lax_to_the_second_derivative(kernel, stride, padding):
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 5))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
  pads = [(padding, padding)] * 2

  def loss(fn):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w, (stride, stride), pads, (1, 1), (1, 1),
                                           dimension_numbers=dn)))

  ours, ref = loss(conv.conv_general_dilated), loss(lax.conv_general_dilated)
  chex.assert_trees_all_close(jax.value_and_grad(ours, (0, 1))(x, w),
                              jax.value_and_grad(ref, (0, 1))(x, w), rtol=1e-5, atol=1e-5)
  second = lambda f: jax.grad(lambda w: jnp.sum(jax.grad(f)(x, w) ** 2))(w)  # DARTS 2nd order
  chex.assert_trees_all_close(second(ours), second(ref), rtol=1e-4, atol=1e-4)


def test_conv_gradient_inside_a_switch_is_the_plain_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
  branches = [lambda x, w: conv.conv_stride1(x, w, ((1, 1), (1, 1))), lambda x, w: x]
  grad = jax.jit(jax.grad(lambda w, i: jnp.sum(lax.switch(i, branches, x, w) ** 2)))
  want = jax.grad(lambda w: jnp.sum(
      lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=NHWC) ** 2))(w)
  chex.assert_trees_all_close(grad(w, 0), want, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_equal(grad(w, 1), jnp.zeros_like(w))


def test_pointwise_as_matmul_matches_lax_to_the_second_derivative():
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (1, 1, 3, 5))
  ref = lambda x, w: jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                              dimension_numbers=NHWC)))
  ours = lambda x, w: jnp.sum(jnp.sin(conv.pointwise_as_matmul(x, w)))
  chex.assert_trees_all_close(jax.value_and_grad(ours, (0, 1))(x, w),
                              jax.value_and_grad(ref, (0, 1))(x, w), rtol=1e-5, atol=1e-5)
  second = lambda f: jax.grad(lambda w: jnp.sum(jax.grad(f)(x, w) ** 2))(w)  # DARTS 2nd order
  chex.assert_trees_all_close(second(ours), second(ref), rtol=1e-4, atol=1e-4)
