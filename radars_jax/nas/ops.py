"""The op registry: every candidate operation of every search space, by name.

An op is a Flax module built by `make_op(name, channels, stride, settings)`.
It maps [B, H, W, C] to [B, H/stride, W/stride, C]. Every op keeps the
channel count, so any op can stand on any edge of a cell. `OP_DOCS` says
what each one is; `OP_NAMES` lists them in registry order.

The names follow the DARTS code (`sep_conv_3x3`, `dil_conv_5x5`, ...) and
NAS-Bench-201 (`nor_conv_3x3`): a space is a list of these names.

Normalisation: inside a search supernet BatchNorm has no affine parameters
and normalises with the statistics of the current batch (as in DARTS search
mixed ops and NAS-Bench-201 search cells); a retrained network uses affine
BatchNorm with running averages. `OpSettings` carries that choice, and
one more: `per_example_norm` normalises each example over its own (H, W, C)
(a layer norm), for agents, whose action for one observation must not
depend on the other observations of its batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.nas import conv as conv_lib
from radars_jax.nas import depthwise
from radars_jax.errors import UserError

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's 0.1 on the new statistic.


@dataclasses.dataclass(frozen=True)
class OpSettings:
  """How ops normalise and compute. Hashable: part of a module's static config."""
  affine: bool = False               # BatchNorm scale and bias
  track_running_stats: bool = False  # False: always normalise with batch stats
  pool_bn: bool = True               # BatchNorm after pooling (DARTS search)
  per_example_norm: bool = False     # statistics of each example, not of the batch
  depthwise_impl: str = "xla"        # see radars_jax.nas.depthwise
  switch_friendly: bool = False      # dense convs with radars_jax.nas.conv's gradients
                                     # (set by the switched supernet)
  remat: bool = True                 # scanned mixed ops recomputed in the backward
                                     # pass (always in supernets; False only to
                                     # measure what it saves: tests/test_remat.py)
  squeeze_excite: bool = False       # MBConv ops squeeze and excite (the mobile
                                     # space's option; they then have no stacked form)


class BatchNorm(nn.Module):
  """BatchNorm over (batch, height, width).

  With `track_running_stats=False` it is a pure function of the batch (no
  state to carry): the search supernet's choice. Statistics are taken over
  the global batch, also when the batch is sharded over devices. With
  `per_example_norm` each example is normalised over its own (H, W, C).
  """
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    s = self.settings
    if s.track_running_stats:
      if s.per_example_norm:
        raise ValueError("per_example_norm keeps no running statistics")
      return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                          epsilon=BN_EPSILON, use_bias=s.affine,
                          use_scale=s.affine)(x)
    y = _lean_normalise(x, norm_axes(s, x.ndim))
    if s.affine:
      y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],))
      y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return y.astype(x.dtype)


def _conv(features, kernel, stride=1, padding=0, dilation=1, name=None, *,
          settings: OpSettings):
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  sh, sw = (stride, stride) if isinstance(stride, int) else stride
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return nn.Conv(features, (kh, kw), strides=(sh, sw),
                 padding=((ph, ph), (pw, pw)), kernel_dilation=dilation,
                 use_bias=False, name=name,
                 conv_general_dilated=(conv_lib.conv_general_dilated
                                       if settings.switch_friendly else None))


class DepthwiseConv(nn.Module):
  """k x k per-channel convolution; the kernel has nn.Conv's grouped layout."""
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, 1, c))
    return depthwise.depthwise_conv2d(x, kernel, self.stride, self.dilation,
                                      impl=self.impl)


class Zero(nn.Module):
  """`none`: the zero map (subsampled at stride 2). Has no weights."""
  stride: int = 1

  def __call__(self, x, train: bool = True):
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


class Identity(nn.Module):
  def __call__(self, x, train: bool = True):
    return x


class FactorizedReduce(nn.Module):
  """Halve the resolution: ReLU, two offset 1x1 stride-2 convs, concat, BN."""
  channels: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = relu(x)
    a = _conv(self.channels // 2, 1, 2, name="conv_a", settings=self.settings)(x)
    b = _conv(self.channels - self.channels // 2, 1, 2, name="conv_b",
              settings=self.settings)(x[:, 1:, 1:, :])
    return BatchNorm(self.settings)(jnp.concatenate([a, b], axis=-1), train)


class ReLUConvBN(nn.Module):
  """ReLU, k x k convolution (no bias), BatchNorm."""
  channels: int
  kernel_size: int
  stride: int
  padding: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = _conv(self.channels, self.kernel_size, self.stride, self.padding,
              settings=self.settings)(relu(x))
    return BatchNorm(self.settings)(x, train)


class FactorisedConv(nn.Module):
  """ReLU, 1 x k then k x 1 convolution, BatchNorm (DARTS `conv_7x1_1x7`)."""
  channels: int
  kernel_size: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    k, p, s = self.kernel_size, self.kernel_size // 2, self.stride
    x = _conv(self.channels, (1, k), (1, s), (0, p), settings=self.settings)(relu(x))
    x = _conv(self.channels, (k, 1), (s, 1), (p, 0), settings=self.settings)(x)
    return BatchNorm(self.settings)(x, train)


class DilConv(nn.Module):
  """ReLU, depthwise k x k (dilated), pointwise 1x1, BatchNorm."""
  channels: int
  kernel_size: int
  stride: int
  dilation: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = DepthwiseConv(self.kernel_size, self.stride, self.dilation,
                      self.settings.depthwise_impl)(relu(x))
    x = _conv(self.channels, 1, settings=self.settings)(x)
    return BatchNorm(self.settings)(x, train)


class SepConv(nn.Module):
  """DARTS separable conv: two (ReLU, depthwise, pointwise, BN) stacks."""
  channels: int
  kernel_size: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = DilConv(self.channels, self.kernel_size, self.stride, 1, self.settings)(x, train)
    return DilConv(self.channels, self.kernel_size, 1, 1, self.settings)(x, train)


class InvertedResidual(nn.Module):
  """MobileNetV2 block without its residual (the edge's `skip_connect` is
  a candidate of its own): ReLU, 1x1 expand the input's channels by
  `expansion`, BN, ReLU, depthwise k x k, BN, (with
  `settings.squeeze_excite`: `SqueezeExcite`), ReLU, 1x1 project to
  `channels`, BN."""
  channels: int
  kernel_size: int
  stride: int
  expansion: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    c_in = x.shape[-1]
    hidden = c_in * self.expansion
    x = BatchNorm(self.settings)(_conv(hidden, 1, settings=self.settings)(relu(x)), train)
    x = DepthwiseConv(self.kernel_size, self.stride, 1,
                      self.settings.depthwise_impl)(relu(x))
    x = BatchNorm(self.settings)(x, train)
    if self.settings.squeeze_excite:
      x = SqueezeExcite(max(1, c_in // 4))(x)
    x = _conv(self.channels, 1, settings=self.settings)(relu(x))
    return BatchNorm(self.settings)(x, train)


class SqueezeExcite(nn.Module):
  """MnasNet's squeeze-and-excite: each channel scaled by a gate computed
  from the globally pooled features through a `squeezed`-wide ReLU layer
  and a sigmoid."""
  squeezed: int

  @nn.compact
  def __call__(self, x):
    s = relu(nn.Dense(self.squeezed, name="squeeze")(x.mean(axis=(1, 2))))
    gate = nn.sigmoid(nn.Dense(x.shape[-1], name="excite")(s))
    return x * gate[:, None, None, :].astype(x.dtype)


class Pool(nn.Module):
  """k x k max or average pooling (average excludes padding), then BN if
  `settings.pool_bn` (the DARTS search mixed op adds it)."""
  kind: str
  kernel_size: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = pool(x, self.kind, self.kernel_size, self.stride, self.settings.depthwise_impl)
    if self.settings.pool_bn:
      x = BatchNorm(self.settings)(x, train)
    return x


def pool(x, kind: str, kernel_size: int, stride: int, impl: str = "xla"):
  """k x k max or average pooling with padding k // 2 (the average excludes
  the padding), kernels from `radars_jax.nas.depthwise`."""
  if kind == "max":
    return depthwise.max_pool2d(x, kernel_size, stride, impl)
  return depthwise.avg_pool2d(x, kernel_size, stride, impl)


class SkipConnect(nn.Module):
  """Identity, or FactorizedReduce when the edge halves the resolution."""
  channels: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.stride == 1:
      return x
    return FactorizedReduce(self.channels, self.settings)(x, train)


OpMaker = Callable[[int, int, OpSettings, str], nn.Module]


@dataclasses.dataclass(frozen=True)
class OpSpec:
  name: str
  make: OpMaker
  doc: str


def _spec(name, doc, make):
  return OpSpec(name, make, doc)


_REGISTRY: tuple[OpSpec, ...] = (
    # --- the 8 DARTS primitives, in DARTS order ---
    _spec("none", "Zero map: the edge is absent.",
          lambda c, s, st, n, **kw: Zero(s, name=n, **kw)),
    _spec("max_pool_3x3", "3x3 max pooling (+ BN in the search supernet).",
          lambda c, s, st, n, **kw: Pool("max", 3, s, st, name=n, **kw)),
    _spec("avg_pool_3x3", "3x3 average pooling, padding excluded (+ BN in the search supernet).",
          lambda c, s, st, n, **kw: Pool("avg", 3, s, st, name=n, **kw)),
    _spec("skip_connect", "Identity; FactorizedReduce on a stride-2 edge.",
          lambda c, s, st, n, **kw: SkipConnect(c, s, st, name=n, **kw)),
    _spec("sep_conv_3x3", "Two stacks of ReLU, depthwise 3x3, pointwise, BN.",
          lambda c, s, st, n, **kw: SepConv(c, 3, s, st, name=n, **kw)),
    _spec("sep_conv_5x5", "Two stacks of ReLU, depthwise 5x5, pointwise, BN.",
          lambda c, s, st, n, **kw: SepConv(c, 5, s, st, name=n, **kw)),
    _spec("dil_conv_3x3", "ReLU, depthwise 3x3 with dilation 2 (5x5 field), pointwise, BN.",
          lambda c, s, st, n, **kw: DilConv(c, 3, s, 2, st, name=n, **kw)),
    _spec("dil_conv_5x5", "ReLU, depthwise 5x5 with dilation 2 (9x9 field), pointwise, BN.",
          lambda c, s, st, n, **kw: DilConv(c, 5, s, 2, st, name=n, **kw)),
    # --- more kernel sizes and dilations ---
    _spec("sep_conv_7x7", "Two stacks of ReLU, depthwise 7x7, pointwise, BN.",
          lambda c, s, st, n, **kw: SepConv(c, 7, s, st, name=n, **kw)),
    _spec("dil_conv_7x7", "ReLU, depthwise 7x7 with dilation 2 (13x13 field), pointwise, BN.",
          lambda c, s, st, n, **kw: DilConv(c, 7, s, 2, st, name=n, **kw)),
    _spec("dil4_conv_3x3", "ReLU, depthwise 3x3 with dilation 4 (9x9 field), pointwise, BN.",
          lambda c, s, st, n, **kw: DilConv(c, 3, s, 4, st, name=n, **kw)),
    # --- plain and factorised convolutions ---
    _spec("nor_conv_1x1", "ReLU, 1x1 convolution, BN (NAS-Bench-201).",
          lambda c, s, st, n, **kw: ReLUConvBN(c, 1, s, 0, st, name=n, **kw)),
    _spec("nor_conv_3x3", "ReLU, full 3x3 convolution, BN (NAS-Bench-201).",
          lambda c, s, st, n, **kw: ReLUConvBN(c, 3, s, 1, st, name=n, **kw)),
    _spec("conv_1x3_3x1", "ReLU, 1x3 then 3x1 convolution, BN.",
          lambda c, s, st, n, **kw: FactorisedConv(c, 3, s, st, name=n, **kw)),
    _spec("conv_1x7_7x1", "ReLU, 1x7 then 7x1 convolution, BN (DARTS conv_7x1_1x7).",
          lambda c, s, st, n, **kw: FactorisedConv(c, 7, s, st, name=n, **kw)),
    # --- larger pooling windows ---
    _spec("max_pool_5x5", "5x5 max pooling (+ BN in the search supernet).",
          lambda c, s, st, n, **kw: Pool("max", 5, s, st, name=n, **kw)),
    _spec("avg_pool_5x5", "5x5 average pooling, padding excluded (+ BN in the search supernet).",
          lambda c, s, st, n, **kw: Pool("avg", 5, s, st, name=n, **kw)),
    # --- inverted residual (MobileNetV2) blocks ---
    _spec("mbconv_3x3_e3", "Inverted residual block: expand x3, depthwise 3x3, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 3, s, 3, st, name=n, **kw)),
    _spec("mbconv_3x3_e6", "Inverted residual block: expand x6, depthwise 3x3, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 3, s, 6, st, name=n, **kw)),
    _spec("mbconv_5x5_e3", "Inverted residual block: expand x3, depthwise 5x5, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 5, s, 3, st, name=n, **kw)),
    _spec("mbconv_5x5_e6", "Inverted residual block: expand x6, depthwise 5x5, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 5, s, 6, st, name=n, **kw)),
    _spec("mbconv_7x7_e3", "Inverted residual block: expand x3, depthwise 7x7, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 7, s, 3, st, name=n, **kw)),
    _spec("mbconv_7x7_e6", "Inverted residual block: expand x6, depthwise 7x7, project.",
          lambda c, s, st, n, **kw: InvertedResidual(c, 7, s, 6, st, name=n, **kw)),
)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in _REGISTRY}
OP_NAMES: tuple[str, ...] = tuple(OPS)
OP_DOCS: dict[str, str] = {spec.name: spec.doc for spec in _REGISTRY}


def check_op_names(names) -> tuple[str, ...]:
  """Returns `names` as a tuple, or raises UserError naming the unknown ones."""
  names = tuple(names)
  unknown = [n for n in names if n not in OPS]
  if unknown:
    raise UserError(f"unknown op(s) {', '.join(map(repr, unknown))}; "
                    f"known ops: {', '.join(OP_NAMES)}")
  if len(set(names)) != len(names):
    raise UserError(f"op list has duplicates: {', '.join(names)}")
  return names


def make_op(name: str, channels: int, stride: int, settings: OpSettings,
            module_name: str | None = None, unbound: bool = False) -> nn.Module:
  """Builds op `name` as a Flax module (named `module_name`, default `name`);
  `unbound`: a standalone module (not a child of the module being built),
  to `init` and `apply` by hand."""
  if name not in OPS:
    check_op_names([name])
  extra = {"parent": None} if unbound else {}
  return OPS[name].make(channels, stride, settings, module_name or name, **extra)


# ---------------------------------------------------------------------------
# Functional ops: an op as a pure function of its weights and its input.
#
# The scanned search cells (`radars_jax.nas.edge_scan.scanned_dag`) run a
# cell's edges in one `lax.scan`, each op's weights stacked over the
# scanned edges (the "stacked form": `param_schema` mirrors the modules
# above, and `weight_pool.canonical` gives the per-edge paths, so weight
# pools and checkpoints see no difference). Each scan step computes one
# edge's ops with `functional_op_of_relu` on its [B, H, W, C] input. Only
# for search settings (BatchNorm without affine parameters or running
# statistics). Every registry op with weights has a functional form
# (tests/test_scan_edges.py checks each against its module); the
# weightless ones run once per state (`shared_op`).
# ---------------------------------------------------------------------------

def kernel_size(name: str) -> int:
  """The spatial kernel size in op `name`'s name: `sep_conv_5x5` 5,
  `mbconv_3x3_e6` 3, `conv_1x7_7x1` 7, `max_pool_3x3` 3."""
  if name.startswith("mbconv_"):
    return int(name.split("_")[1][0])
  if name.startswith("conv_1x"):
    return int(name.split("_")[1][2:])
  return int(name[-1])


def _kernel(k, c_in, c_out):
  return {"kernel": (k, k, c_in, c_out)}


def _dil_schema(c, k):
  return {"DepthwiseConv_0": _kernel(k, 1, c), "Conv_0": _kernel(1, c, c)}


def param_schema(name: str, channels: int, stride: int):
  """Nested {module name: {... {param name: shape}}} of op `name`'s weights
  (exactly its module's), or None if the op has no stacked form."""
  c = channels
  if name.startswith(("sep_conv_", "dil_conv_", "dil4_conv_")):
    k = kernel_size(name)
    if name.startswith("sep_conv_"):
      return {"DilConv_0": _dil_schema(c, k), "DilConv_1": _dil_schema(c, k)}
    return _dil_schema(c, k)
  if name.startswith("mbconv_"):
    k, e = kernel_size(name), int(name.split("_e")[-1])
    return {"Conv_0": _kernel(1, c, c * e), "DepthwiseConv_0": _kernel(k, 1, c * e),
            "Conv_1": _kernel(1, c * e, c)}
  if name.startswith("nor_conv_"):
    return {"Conv_0": _kernel(kernel_size(name), c, c)}
  if name.startswith("conv_1x"):   # conv_1xk_kx1
    k = kernel_size(name)
    return {"Conv_0": {"kernel": (1, k, c, c)}, "Conv_1": {"kernel": (k, 1, c, c)}}
  if name == "skip_connect" and stride == 2:
    return {"FactorizedReduce_0": {"conv_a": _kernel(1, c, c // 2),
                                   "conv_b": _kernel(1, c, c - c // 2)}}
  return None


def is_shared(name: str, stride: int) -> bool:
  """Ops without weights: the same output on every edge from one state, so
  the supernet computes them once per state (pooling, identity)."""
  return name.startswith(("max_pool_", "avg_pool_")) or (name == "skip_connect" and stride == 1)


def shared_op(name: str, x, stride: int, settings: OpSettings):
  """A weightless op (`is_shared`) on one state [B, H, W, C]."""
  if name == "skip_connect":
    return x
  y = pool(x, name.split("_")[0], kernel_size(name), stride, settings.depthwise_impl)
  return batch_norm(y, norm_axes(settings, y.ndim)) if settings.pool_bn else y


class Params(nn.Module):
  """Declares the weights of a `param_schema` (LeCun-normal kernels, as
  nn.Conv's) and returns them; with `stack` > 0, `stack` independent sets
  along a leading axis (each drawn as its own)."""
  schema: dict
  stack: int = 0

  @nn.compact
  def __call__(self):
    out = {}
    for key, value in self.schema.items():
      if isinstance(value, Mapping):
        out[key] = Params(value, self.stack, name=key)()
      elif self.stack:
        out[key] = self.param(key, nn.initializers.lecun_normal(batch_axis=(0,)),
                              (self.stack, *value))
      else:
        out[key] = self.param(key, nn.initializers.lecun_normal(), tuple(value))
    return out


def stackable(settings: OpSettings) -> bool:
  """Stacked ops need weightless, stateless BatchNorm over the batch
  (the image search's settings)."""
  return not (settings.affine or settings.track_running_stats or settings.per_example_norm)


def norm_axes(settings: OpSettings, ndim: int) -> tuple[int, ...]:
  """The axes an op's normalisation takes its statistics over, on
  [B, ..., C]: all but the channels (the batch), or with
  `per_example_norm` all but the batch (each example)."""
  return tuple(range(1, ndim)) if settings.per_example_norm else tuple(range(ndim - 1))


def has_functional_form(name: str, stride: int) -> bool:
  """Whether op `name` runs without its module: `none`, a weightless shared
  op, or an op with a stacked form (`param_schema`)."""
  return name == "none" or is_shared(name, stride) or param_schema(name, 1, stride) is not None


def without_stacked_form(names) -> list[str]:
  """The ops of `names` that a scanned cell cannot run (no functional form
  at stride 1), sorted, each once."""
  return sorted({n for n in names if not has_functional_form(n, 1)})


def check_scannable(names) -> None:
  """`supernet.scan_edges` over ops `names`: a UserError naming those
  without a stacked form."""
  lacking = without_stacked_form(names)
  if lacking:
    raise UserError(f"supernet.scan_edges needs ops with a stacked form (radars_jax.nas.ops."
                    f"param_schema); these have none: {', '.join(lacking)}")


def _normalised_and_rstd(x, axes):
  """((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps)) over `axes`, in >= f32."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(axis=axes, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.square(xf - mean).mean(axis=axes, keepdims=True) + BN_EPSILON)
  return (xf - mean) * rstd, rstd


def _normalise(x, axes):
  """(x - mean) / sqrt(var + eps) over `axes`, statistics and result in >= f32."""
  return _normalised_and_rstd(x, axes)[0]


def batch_norm(x, axes=None):
  """Affine-free BatchNorm with batch statistics over all axes but the last
  (or `axes`): the search supernet's `BatchNorm`, as a function. Its
  gradient keeps only the output and 1/std (`_lean_normalise`)."""
  axes = tuple(range(x.ndim - 1)) if axes is None else axes
  return _lean_normalise(x, axes).astype(x.dtype)


# Every op differentiates ReLU and affine-free BatchNorm by hand, keeping
# one activation-sized residual each where autodiff keeps three (ReLU: its
# output, the mask x > 0 and a zero tensor; BatchNorm: three intermediates
# of the normalisation; `jax.ad_checkpoint.print_saved_residuals`): fewer
# bytes and a faster step (docs/performance.md). Inside a `lax.scan`
# (`scan_edges`) every residual also becomes a stacked buffer that XLA
# fills with zeros before the loop.

@jax.custom_vjp
def relu(x):
  """max(x, 0), whose gradient keeps only its output (gradient 0 at 0, as
  `jax.nn.relu`'s)."""
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  y = jnp.maximum(x, 0)
  return y, y


def _relu_bwd(y, g):
  return (jnp.where(y > 0, g, jnp.zeros_like(g)),)


relu.defvjp(_relu_fwd, _relu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lean_normalise(x, axes):
  """`_normalise` (result in >= f32) whose gradient keeps only the output
  (in x's dtype) and 1/std."""
  return _normalise(x, axes)


def _lean_normalise_fwd(x, axes):
  y, rstd = _normalised_and_rstd(x, axes)
  return y, (y.astype(x.dtype), rstd)


def _lean_normalise_bwd(axes, residuals, g):
  # y = (x - mean) * rstd with the biased variance:
  # dx = rstd * (g - mean(g) - y * mean(g * y))
  y, rstd = residuals
  yf, gf = y.astype(rstd.dtype), g.astype(rstd.dtype)
  dx = rstd * (gf - gf.mean(axis=axes, keepdims=True)
               - yf * (gf * yf).mean(axis=axes, keepdims=True))
  return (dx.astype(y.dtype),)


_lean_normalise.defvjp(_lean_normalise_fwd, _lean_normalise_bwd)


def _pointwise(x, kernel):
  """1x1 convolution of [B, H, W, Cin] with [1, 1, Cin, Cout]."""
  return conv_lib.pointwise_as_matmul(x, kernel.astype(x.dtype))


def _dense_conv(x, kernel, strides, padding):
  """Dense convolution of [B, H, W, Cin] with [kh, kw, Cin, Cout]."""
  return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _dil(p, rx, k, stride, dilation, impl):
  """DilConv given the ReLU `rx` of its input."""
  x = depthwise.depthwise_conv2d(rx, p["DepthwiseConv_0"]["kernel"], stride, dilation,
                                 impl=impl)
  return batch_norm(_pointwise(x, p["Conv_0"]["kernel"]))


def functional_op_of_relu(name: str, params, rx, stride: int, settings: OpSettings):
  """Op `name` (with a `param_schema`) as a function of its weights
  `params` and the ReLU `rx` of its input x [B, H, W, C]: the same numbers
  as its module. Every op with weights starts with a ReLU of its input, so
  the ops of one edge share it (`radars_jax.nas.edge_scan`)."""
  impl = settings.depthwise_impl
  if name.startswith("sep_conv_"):
    k = kernel_size(name)
    x = _dil(params["DilConv_0"], rx, k, stride, 1, impl)
    return _dil(params["DilConv_1"], relu(x), k, 1, 1, impl)
  if name.startswith(("dil_conv_", "dil4_conv_")):
    return _dil(params, rx, kernel_size(name), stride,
                4 if name.startswith("dil4") else 2, impl)
  if name.startswith("mbconv_"):
    h = batch_norm(_pointwise(rx, params["Conv_0"]["kernel"]))
    h = depthwise.depthwise_conv2d(relu(h), params["DepthwiseConv_0"]["kernel"], stride,
                                   1, impl=impl)
    return batch_norm(_pointwise(relu(batch_norm(h)), params["Conv_1"]["kernel"]))
  if name == "nor_conv_1x1":
    return batch_norm(_pointwise(rx[:, ::stride, ::stride, :], params["Conv_0"]["kernel"]))
  if name.startswith("nor_conv_"):
    p = kernel_size(name) // 2
    return batch_norm(_dense_conv(rx, params["Conv_0"]["kernel"], (stride, stride),
                                  ((p, p), (p, p))))
  if name.startswith("conv_1x"):   # FactorisedConv: 1 x k, then k x 1
    p = kernel_size(name) // 2
    x = _dense_conv(rx, params["Conv_0"]["kernel"], (1, stride), ((0, 0), (p, p)))
    return batch_norm(_dense_conv(x, params["Conv_1"]["kernel"], (stride, 1), ((p, p), (0, 0))))
  if name == "skip_connect":  # stride 2: FactorizedReduce
    p = params["FactorizedReduce_0"]
    a = _pointwise(rx[:, ::2, ::2, :], p["conv_a"]["kernel"])
    b = _pointwise(rx[:, 1::2, 1::2, :], p["conv_b"]["kernel"])
    return batch_norm(jnp.concatenate([a, b], axis=-1))
  raise ValueError(f"op {name!r} has no functional form")
