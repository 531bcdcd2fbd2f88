"""Dense 2-D convolutions (NHWC, HWIO) in the forms XLA's CPU backend runs
fastest: inside `lax.switch` branches (`conv_general_dilated`), and 1x1
ones as matrix products (`pointwise_as_matmul`).

Outside control flow XLA rewrites a convolution's gradients (the input
gradient and the kernel gradient, convolutions with permuted dimension
labels) into its fast NHWC convolution. Inside a conditional's branch it
does not, and runs them through a generic loop, many times slower
(docs/performance.md). The switched supernet
(`radars_jax.nas.mixed_ops.SwitchedMixedOp`) computes every op's backward pass
inside a switch, so its ops use `conv_general_dilated` here, which writes
both gradients as NHWC convolutions with explicit transposes: same numbers,
same speed as outside a switch. It covers stride 1 with any kernel, and
1x1 kernels at any stride without padding (subsample, then stride 1), both
without dilation or groups; anything else falls back to
`lax.conv_general_dilated` (correct, slow inside switches).

Outside switches XLA's own rewrite of the gradients is faster, so the
ops' modules keep `lax`'s convolution (`OpSettings.switch_friendly`
False). The scanned edges' functional ops (`radars_jax.nas.ops.
functional_op_of_relu`) compute their 1x1 convolutions with
`pointwise_as_matmul`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride1(x, w, padding):
  """Stride-1 convolution, `padding` = ((top, bottom), (left, right))."""
  return _conv(x, w, padding)


def _forward(x, w, padding):
  return _conv(x, w, padding), (x, w)


def _backward(padding, residuals, g):
  x, w = residuals
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = padding
  # input gradient: g correlated with the flipped kernel, in and out swapped
  flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  dx = _conv(g, flipped, ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
  # kernel gradient: channels in as the batch, the batch as the features
  dw = _conv(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), padding)
  return dx, jnp.transpose(dw, (1, 2, 0, 3))


conv_stride1.defvjp(_forward, _backward)


def _pairs(v, n=2):
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None, **kwargs):
  """`lax.conv_general_dilated` for NHWC / HWIO (what `flax.linen.Conv`
  passes), with canonical gradients where the case is covered."""
  strides = _pairs(window_strides)
  plain = (all(d == 1 for d in _pairs(lhs_dilation or 1)) and
           all(d == 1 for d in _pairs(rhs_dilation or 1)) and feature_group_count == 1 and
           precision is None and preferred_element_type is None and not kwargs and
           not isinstance(padding, str) and lhs.ndim == 4 and
           lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC) ==
           lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or NHWC))
  padding = tuple(tuple(int(p) for p in pair) for pair in padding) if plain else padding
  if plain and strides == (1, 1):
    return conv_stride1(lhs, rhs, padding)
  if plain and rhs.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
    return conv_stride1(lhs[:, ::strides[0], ::strides[1], :], rhs, padding)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  preferred_element_type=preferred_element_type, **kwargs)


def pointwise_as_matmul(x, kernel):
  """A 1x1 convolution (NHWC, HWIO [1, 1, Cin, Cout]) as one 2-D matrix
  product: on the CPU about 1.4x faster in a DARTS mixed op than XLA's
  convolution or a dot with a batch axis (docs/performance.md)."""
  k = kernel[0, 0]
  return (x.reshape(-1, x.shape[-1]) @ k).reshape(*x.shape[:-1], k.shape[-1])
