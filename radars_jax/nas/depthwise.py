"""Per-channel window ops, NHWC: depthwise convolution and pooling, with a
choice of kernels.

Depthwise convolutions dominate the DARTS supernet (every `sep_conv_*`,
`dil_conv_*` and inverted-residual op has them). XLA lowers them as grouped
convolutions, and max pooling's gradient as `select_and_scatter`; on the
CPU both are several times slower than the shifted sum below
(docs/performance.md). `impl` picks one:

- `xla`: `conv_general_dilated` with `feature_group_count` and Flax's
  pooling (`reduce_window`); the natural choice on GPU and TPU.
- `shifted`: the k*k taps as a sum of shifted slices of the padded input,
  one fused loop, with a hand-written gradient: the input gradient is the
  same tap sum over the (stride-dilated) output gradient with the kernel
  flipped, the kernel gradient one variadic reduction that accumulates all
  k*k products in a single pass. Max pooling is the max over the same
  windows; its gradient goes to the first maximum of each window (as
  `select_and_scatter` and PyTorch do). Fast on the CPU.
- `auto`: `shifted` on the CPU, `xla` on accelerators.

All give the same numbers up to float rounding.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "shifted", "auto")


def resolve_impl(impl: str) -> str:
  """`auto` -> `shifted` on the CPU, `xla` elsewhere; others unchanged."""
  check_impl(impl)
  if impl == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "xla"
  return impl


def _same_padding(kernel_size: int, dilation: int) -> int:
  return dilation * (kernel_size - 1) // 2


def _out_size(size: int, k: int, stride: int, dilation: int, pad: int) -> int:
  return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _pad_hw(x, lo, hi=None, value=0.0, interior=0):
  """Pads the two spatial axes (-3, -2) of `x` (negative: crops)."""
  hi = lo if hi is None else hi
  lo_h, lo_w = (lo, lo) if isinstance(lo, int) else lo
  hi_h, hi_w = (hi, hi) if isinstance(hi, int) else hi
  config = [(0, 0, 0)] * (x.ndim - 3) + [(lo_h, hi_h, interior), (lo_w, hi_w, interior),
                                         (0, 0, 0)]
  return jax.lax.pad(x, jnp.asarray(value, x.dtype), config)


def _windows(xp, k, stride, dilation, h_out, w_out):
  """The k*k strided windows of the padded input `xp`, one per tap (i, j)."""
  lead = xp.ndim - 3
  for i in range(k):
    for j in range(k):
      r0, c0 = i * dilation, j * dilation
      yield i, j, jax.lax.slice(
          xp, (0,) * lead + (r0, c0, 0),
          xp.shape[:lead] + (r0 + (h_out - 1) * stride + 1,
                             c0 + (w_out - 1) * stride + 1, xp.shape[-1]),
          (1,) * lead + (stride, stride, 1))


def _tap_sum(xp, kernel, stride, dilation, h_out, w_out):
  """sum_{i,j} kernel[i, j] * window_ij(xp): one fused loop over the output."""
  out = None
  for i, j, window in _windows(xp, kernel.shape[-4], stride, dilation, h_out, w_out):
    term = window * kernel[i, j, 0, :]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _shifted_sum(x, kernel, stride, dilation, pad):
  """sum_{i,j} kernel[i, j] * x shifted by (i, j): k*k fused multiply-adds.

  The gradient is written by hand (`_shifted_bwd`): differentiating the
  slices gives k*k pads for the input and k*k separate reductions for the
  kernel, which XLA's CPU backend runs several times slower than the two
  fused loops below."""
  k = kernel.shape[-4]
  return _tap_sum(_pad_hw(x, pad), kernel, stride, dilation,
                  _out_size(x.shape[-3], k, stride, dilation, pad),
                  _out_size(x.shape[-2], k, stride, dilation, pad))


def _shifted_fwd(x, kernel, stride, dilation, pad):
  return _shifted_sum(x, kernel, stride, dilation, pad), (x, kernel)


def _transposed_input(g, k, stride, dilation, pad, h, w, value=0.0):
  """The output gradient laid out for the transposed tap sum: dilated by
  the stride and padded so that window (i, j) of the result lines up with
  tap (k-1-i, k-1-j) of the forward pass."""
  lo = dilation * (k - 1) - pad
  h_out, w_out = g.shape[-3], g.shape[-2]
  return _pad_hw(g, lo, (h + pad - (h_out - 1) * stride - 1,
                         w + pad - (w_out - 1) * stride - 1), value, stride - 1)


def _shifted_bwd(stride, dilation, pad, res, g):
  """Input gradient: the transposed convolution, i.e. the same tap sum over
  the output gradient dilated by the stride, padded, with the kernel
  flipped. Kernel gradient: one variadic reduction that accumulates the k*k
  products window_ij(x) * g in a single pass over the batch."""
  x, kernel = res
  k = kernel.shape[-4]
  h, w = x.shape[-3], x.shape[-2]
  gp = _transposed_input(g, k, stride, dilation, pad, h, w)
  grad_x = _tap_sum(gp, kernel[..., ::-1, ::-1, :, :], 1, dilation, h, w)

  acc = jnp.promote_types(x.dtype, jnp.float32)
  gf = g.astype(acc)
  products = tuple(window.astype(acc) * gf for _, _, window in
                   _windows(_pad_hw(x, pad), k, stride, dilation, g.shape[-3], g.shape[-2]))
  n = len(products)
  sums = jax.lax.reduce(products, tuple(jnp.zeros((), acc) for _ in range(n)),
                        lambda a, b: tuple(a[t] + b[t] for t in range(n)),
                        tuple(range(x.ndim - 1)))
  grad_kernel = jnp.stack(sums, axis=-2)       # [k*k, C]
  grad_kernel = grad_kernel.reshape(kernel.shape).astype(kernel.dtype)
  return grad_x.astype(x.dtype), grad_kernel


_shifted_sum.defvjp(_shifted_fwd, _shifted_bwd)


def _xla_conv(x, kernel, stride, dilation, pad):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


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
  impl = resolve_impl(impl)
  kernel = kernel.astype(x.dtype)
  if impl == "xla":
    return _xla_conv(x, kernel, stride, dilation, pad)
  return _shifted_sum(x, kernel, stride, dilation, pad)


# ---------------------------------------------------------------------------
# Pooling (k x k, padding k // 2, as in DARTS)
# ---------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_shifted(x, k, stride):
  pad = k // 2
  xp = _pad_hw(x, pad, value=-jnp.inf)
  h_out, w_out = _out_size(x.shape[-3], k, stride, 1, pad), _out_size(x.shape[-2], k, stride, 1, pad)
  out = None
  for _, _, window in _windows(xp, k, stride, 1, h_out, w_out):
    out = window if out is None else jnp.maximum(out, window)
  return out


def _max_pool_fwd(x, k, stride):
  out = _max_pool_shifted(x, k, stride)
  return out, (x, out)


def _max_pool_bwd(k, stride, res, g):
  """Each output's gradient goes to the first maximum of its window (row
  major), like `select_and_scatter` and PyTorch: the winning tap index is
  found in one pass, then scattered back as a transposed tap sum."""
  x, out = res
  pad = k // 2
  h, w = x.shape[-3], x.shape[-2]
  xp = _pad_hw(x, pad, value=-jnp.inf)
  winner = jnp.full(out.shape, k * k, jnp.int32)
  windows = list(_windows(xp, k, stride, 1, out.shape[-3], out.shape[-2]))
  for i, j, window in reversed(windows):
    winner = jnp.where(window == out, i * k + j, winner)
  gp = _transposed_input(g, k, stride, 1, pad, h, w)
  wp = _transposed_input(winner, k, stride, 1, pad, h, w, value=-1)
  grad = None
  for (i, j, g_win), (_, _, w_win) in zip(_windows(gp, k, 1, 1, h, w), _windows(wp, k, 1, 1, h, w)):
    term = jnp.where(w_win == (k - 1 - i) * k + (k - 1 - j), g_win, jnp.zeros((), g.dtype))
    grad = term if grad is None else grad + term
  return (grad,)


_max_pool_shifted.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool2d(x: jax.Array, k: int, stride: int = 1, impl: str = "xla") -> jax.Array:
  """k x k max pooling with padding k // 2 (padding never wins)."""
  impl = resolve_impl(impl)
  if impl == "xla":
    pad = k // 2
    config = [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)]
    window = (1,) * (x.ndim - 3) + (k, k, 1)
    strides = (1,) * (x.ndim - 3) + (stride, stride, 1)
    return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, window, strides, config)
  return _max_pool_shifted(x, k, stride)


@functools.lru_cache(maxsize=None)
def _window_counts(h, w, k, stride):
  """How many real (unpadded) pixels each output window covers."""
  pad = k // 2
  ones = np.pad(np.ones((h, w)), pad)
  h_out, w_out = _out_size(h, k, stride, 1, pad), _out_size(w, k, stride, 1, pad)
  counts = np.zeros((h_out, w_out))
  for i in range(k):
    for j in range(k):
      counts += ones[i:i + (h_out - 1) * stride + 1:stride, j:j + (w_out - 1) * stride + 1:stride]
  return counts


def avg_pool2d(x: jax.Array, k: int, stride: int = 1, impl: str = "xla") -> jax.Array:
  """k x k average pooling with padding k // 2, padding excluded from the
  average (PyTorch's count_include_pad=False)."""
  impl = resolve_impl(impl)
  pad = k // 2
  counts = _window_counts(x.shape[-3], x.shape[-2], k, stride)
  inv = jnp.asarray(1.0 / counts, x.dtype)[:, :, None]
  if impl == "xla":
    config = [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)]
    window = (1,) * (x.ndim - 3) + (k, k, 1)
    strides = (1,) * (x.ndim - 3) + (stride, stride, 1)
    total = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, window, strides,
                                  config)
    return total * inv
  ones = jnp.ones((k, k, 1, x.shape[-1]), x.dtype)
  return _shifted_sum(x, ones, stride, 1, pad) * inv


def check_impl(impl: str) -> str:
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown depthwise implementation {impl!r}; "
                     f"choose one of {IMPLEMENTATIONS}")
  return impl


__all__: Sequence[str] = ("depthwise_conv2d", "max_pool2d", "avg_pool2d", "resolve_impl",
                          "IMPLEMENTATIONS")
