"""Depthwise (per-channel) 2-D convolution, NHWC, with a choice of kernels.

Depthwise convolutions dominate the DARTS supernet (every `sep_conv_*`,
`dil_conv_*` and inverted-residual op has them). XLA lowers them as grouped
convolutions; on some backends (notably the CPU) a sum of shifted slices is
faster. `impl` picks one; both give the same numbers.
"""
from typing import Sequence

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "shifted", "scan")


def _same_padding(kernel_size: int, dilation: int) -> int:
  return dilation * (kernel_size - 1) // 2


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
                     dilation: int = 1, padding: int | None = None,
                     impl: str = "xla") -> jax.Array:
  """Per-channel convolution of `x` [B, H, W, C] with `kernel` [k, k, 1, C].

  Padding is symmetric (`padding` pixels on each side, default: the padding
  that keeps the size at stride 1), as in PyTorch, so output sizes match the
  reference DARTS code.
  """
  k = kernel.shape[0]
  pad = _same_padding(k, dilation) if padding is None else padding
  if impl == "xla":
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1])
  if impl == "shifted":
    return _shifted_sum(x, kernel.astype(x.dtype), stride, dilation, pad)
  if impl == "scan":
    return _scanned_taps(x, kernel.astype(x.dtype), stride, dilation, pad)
  raise ValueError(f"unknown depthwise implementation {impl!r}; "
                   f"choose one of {IMPLEMENTATIONS}")


def _shifted_sum(x, kernel, stride, dilation, pad):
  """sum_{i,j} kernel[i, j] * x shifted by (i, j): k*k fused multiply-adds."""
  k = kernel.shape[0]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h_out = (xp.shape[1] - dilation * (k - 1) - 1) // stride + 1
  w_out = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
  out = None
  for i in range(k):
    for j in range(k):
      r0, c0 = i * dilation, j * dilation
      window = jax.lax.slice(
          xp, (0, r0, c0, 0),
          (xp.shape[0], r0 + (h_out - 1) * stride + 1,
           c0 + (w_out - 1) * stride + 1, xp.shape[3]),
          (1, stride, stride, 1))
      term = window * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


def _scanned_taps(x, kernel, stride, dilation, pad):
  """The shifted sum as a `lax.scan` over the k*k taps: the same arithmetic
  with one loop body in the program, so compile time does not grow with k."""
  k, c = kernel.shape[0], kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h_out = (xp.shape[1] - dilation * (k - 1) - 1) // stride + 1
  w_out = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
  rows, cols = (h_out - 1) * stride + 1, (w_out - 1) * stride + 1
  offsets = jnp.asarray([(i * dilation, j * dilation) for i in range(k) for j in range(k)],
                        jnp.int32)
  taps = kernel.reshape(k * k, c)

  def add_tap(acc, tap):
    offset, weight = tap
    window = jax.lax.dynamic_slice(xp, (0, offset[0], offset[1], 0),
                                   (xp.shape[0], rows, cols, c))
    return acc + window[:, ::stride, ::stride, :] * weight, None

  init = jnp.zeros((x.shape[0], h_out, w_out, c), x.dtype)
  out, _ = jax.lax.scan(add_tap, init, (offsets, taps))
  return out


def check_impl(impl: str) -> str:
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown depthwise implementation {impl!r}")
  return impl


__all__: Sequence[str] = ("depthwise_conv2d", "IMPLEMENTATIONS")
