"""The discrete networks that a genotype is retrained as, from scratch.

- `DartsEvalNetwork`: DARTS `NetworkCIFAR` (quark0/darts `cnn/model.py`):
  a 3x3 stem conv to `stem_multiplier * C` channels with BatchNorm, `layers`
  cells (reduction cells, with doubled channels, at 1/3 and 2/3 of the
  depth), global average pooling and a linear classifier. Each cell
  preprocesses its two inputs (FactorizedReduce for s0 after a reduction
  cell, else ReLU-conv1x1-BN; ReLU-conv1x1-BN for s1), builds node k + 2 as
  the sum of the genotype's pairs 2k and 2k + 1, each an op of the registry
  applied to one earlier state (stride 2 on the cell inputs of a reduction
  cell), with drop path on every op but the identity in training, and
  concatenates the `concat` nodes. With `auxiliary=True` the DARTS auxiliary
  head (`AuxiliaryHeadCIFAR`) reads the output of the cell at 2/3 depth.
- `NB201Network`: the NAS-Bench-201 skeleton (`TinyNetwork`) with one op per
  edge: stem, 3 stages of `cells_per_stage` cells with residual reduction
  blocks between them, BN-ReLU, pooling, classifier. `none` edges add zero.
- `MobileNetwork` (`radars_jax.nas.mobile`): the chain of MBConv blocks,
  one op per block (`none`: skipped).

Ops use `OpSettings(affine=True, track_running_stats=True, pool_bn=False)`:
affine BatchNorm with running averages (batch statistics in training, the
averages in evaluation), no BatchNorm after pooling. Both networks return
`(logits, aux_logits)`; `aux_logits` is None unless the auxiliary head ran
(training, or initialisation, with `auxiliary=True`).

`count_weights` counts trainable parameters (the `params` collection, not
the BatchNorm statistics), optionally without the auxiliary head, as the
DARTS code does. `count_macs` counts multiply-adds.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.nas import genotypes as genotypes_lib
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.errors import UserError
from radars_jax.nas.ops import BatchNorm, OpSettings, relu
from radars_jax.nas.cells import ResNetBasicBlock, preprocess_cell_inputs
from radars_jax.nas.mobile import MobileNetwork

EVAL_SETTINGS = OpSettings(affine=True, track_running_stats=True, pool_bn=False)
AUX_NAME = "auxiliary_head"
DROP_PATH_RNG = "drop_path"

Pairs = tuple[tuple[str, int], ...]


def drop_path(x: jax.Array, drop_prob, key: jax.Array) -> jax.Array:
  """Zeroes whole examples with probability `drop_prob` and scales the rest
  by 1 / (1 - drop_prob) (DARTS `drop_path`); `drop_prob` may be traced,
  and 0 is the identity."""
  keep = 1.0 - jnp.asarray(drop_prob, jnp.float32)
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return (x / keep.astype(x.dtype)) * mask.astype(x.dtype)


def _is_identity(op: str, stride: int) -> bool:
  return op == "skip_connect" and stride == 1


class DartsEvalCell(nn.Module):
  """One DARTS cell of a discrete genotype."""
  pairs: Pairs
  concat: tuple[int, ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  settings: OpSettings = EVAL_SETTINGS

  @nn.compact
  def __call__(self, s0, s1, train: bool = False, drop_prob=None):
    c, st = self.channels, self.settings
    states = list(preprocess_cell_inputs(s0, s1, c, st, self.reduction_prev, train))
    for node in range(len(self.pairs) // 2):
      total = None
      for j in (2 * node, 2 * node + 1):
        op, src = self.pairs[j]
        stride = 2 if self.reduction and src < 2 else 1
        h = ops_lib.make_op(op, c, stride, st, module_name=f"op_{j}_{op}")(states[src], train)
        if train and drop_prob is not None and not _is_identity(op, stride):
          h = drop_path(h, drop_prob, self.make_rng(DROP_PATH_RNG))
        total = h if total is None else total + h
      states.append(total)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHeadCIFAR(nn.Module):
  """DARTS auxiliary classifier for 8x8 feature maps: ReLU, 5x5 average
  pooling with stride 3 (to 2x2), 1x1 conv to 128, BN, ReLU, 2x2 conv to
  768, BN, ReLU, linear."""
  num_classes: int
  settings: OpSettings = EVAL_SETTINGS

  @nn.compact
  def __call__(self, x, train: bool = False):
    # (5x5 average pooling with stride 3 and a 2x2 convolution: 8x8 at least)
    if x.shape[1] < 8 or x.shape[2] < 8:
      raise UserError(f"the auxiliary head needs feature maps of at least 8x8 at 2/3 "
                      f"depth, got {x.shape[1]}x{x.shape[2]} (images too small); set "
                      "train.auxiliary_weight=0")
    x = nn.avg_pool(relu(x), (5, 5), (3, 3), "VALID", count_include_pad=False)
    x = nn.Conv(128, (1, 1), use_bias=False, name="conv1")(x)
    x = relu(BatchNorm(self.settings, name="bn1")(x, train))
    x = nn.Conv(768, (2, 2), padding="VALID", use_bias=False, name="conv2")(x)
    x = relu(BatchNorm(self.settings, name="bn2")(x, train))
    return nn.Dense(self.num_classes, name="classifier")(x.reshape(x.shape[0], -1))


class DartsEvalNetwork(nn.Module):
  """DARTS NetworkCIFAR for a genotype (see the module docstring)."""
  normal: Pairs
  normal_concat: tuple[int, ...]
  reduce: Pairs
  reduce_concat: tuple[int, ...]
  num_classes: int
  channels: int = 36
  layers: int = 20
  auxiliary: bool = False
  stem_multiplier: int = 3
  settings: OpSettings = EVAL_SETTINGS

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob=None):
    c = self.channels
    x = nn.Conv(self.stem_multiplier * c, (3, 3), padding=((1, 1), (1, 1)),
                use_bias=False, name="stem_conv")(x)
    s0 = s1 = BatchNorm(self.settings, name="stem_bn")(x, train)
    reduction_prev = False
    aux_logits = None
    for i in range(self.layers):
      reduction = i in (self.layers // 3, 2 * self.layers // 3)
      if reduction:
        c *= 2
      cell = DartsEvalCell(self.reduce if reduction else self.normal,
                           self.reduce_concat if reduction else self.normal_concat,
                           c, reduction, reduction_prev, self.settings, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, train, drop_prob)
      reduction_prev = reduction
      if (i == 2 * self.layers // 3 and self.auxiliary
          and (train or self.is_initializing())):
        aux_logits = AuxiliaryHeadCIFAR(self.num_classes, self.settings, name=AUX_NAME)(
            s1, train)
    logits = nn.Dense(self.num_classes, name="classifier")(s1.mean(axis=(1, 2)))
    return logits, aux_logits


class NB201InferCell(nn.Module):
  """NAS-Bench-201 cell with one op per edge: node i = sum over j < i of
  op(j -> i)(node j); `none` edges are left out (they add zero). A node
  whose inputs are all `none` is zeros, and the ops leaving it still run on
  those zeros (as in NAS-Bench-201: their weights count and train)."""
  ops: tuple[str, ...]
  channels: int
  settings: OpSettings = EVAL_SETTINGS

  @nn.compact
  def __call__(self, x, train: bool = False):
    nodes = [x]
    for e, (src, dst) in enumerate(spaces_lib.nb201_edges()):
      if src == 0:
        nodes.append(None)
      op = self.ops[e]
      if op == "none":
        continue
      y = ops_lib.make_op(op, self.channels, 1, self.settings,
                          module_name=f"edge_{src}_{dst}_{op}")(
                              jnp.zeros_like(x) if nodes[src] is None else nodes[src], train)
      nodes[dst] = y if nodes[dst] is None else nodes[dst] + y
    return jnp.zeros_like(x) if nodes[-1] is None else nodes[-1]


class NB201Network(nn.Module):
  """NAS-Bench-201 `TinyNetwork` with a discrete cell."""
  ops: tuple[str, ...]
  num_classes: int
  channels: int = 16
  cells_per_stage: int = 5
  settings: OpSettings = EVAL_SETTINGS

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob=None):
    del drop_prob  # NAS-Bench-201 trains without drop path
    c = self.channels
    x = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem_conv")(x)
    x = BatchNorm(self.settings, name="stem_bn")(x, train)
    for stage in range(3):
      if stage > 0:
        c *= 2
        x = ResNetBasicBlock(c, self.settings, name=f"reduce_{stage}")(x, train)
      for i in range(self.cells_per_stage):
        x = NB201InferCell(self.ops, c, self.settings, name=f"cell_{stage}_{i}")(x, train)
    x = relu(BatchNorm(self.settings, name="last_bn")(x, train))
    return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2))), None


def build_network(genotype: dict, num_classes: int, *, channels: int = 36,
                  layers: int = 20, auxiliary: bool = False, nb201_channels: int = 16,
                  nb201_cells_per_stage: int = 5, mobile_width_mult: float = 1.0,
                  depthwise_impl: str = "xla") -> nn.Module:
  """The eval network of a genotype dict (DARTS cells, a NAS-Bench-201 cell
  or a mobile network)."""
  genotype = genotypes_lib.check_genotype(genotype)
  settings = OpSettings(affine=True, track_running_stats=True, pool_bn=False,
                        depthwise_impl=depthwise_impl)
  if genotypes_lib.is_mobile(genotype):
    return MobileNetwork(tuple(genotype["blocks"]), num_classes,
                         tuple(genotype["stage_blocks"]), mobile_width_mult,
                         dataclasses.replace(settings,
                                             squeeze_excite=genotype["squeeze_excite"]))
  if genotypes_lib.is_nb201(genotype):
    return NB201Network(tuple(genotype["ops"]), num_classes, nb201_channels,
                        nb201_cells_per_stage, settings)
  if layers < 3:
    raise UserError(f"train.layers={layers}: a DARTS network needs at least 3 cells")
  pairs = lambda cell: tuple((str(op), int(src)) for op, src in genotype[cell])  # noqa: E731
  return DartsEvalNetwork(
      normal=pairs("normal"), normal_concat=tuple(genotype["normal_concat"]),
      reduce=pairs("reduce"), reduce_concat=tuple(genotype["reduce_concat"]),
      num_classes=num_classes, channels=channels, layers=layers, auxiliary=auxiliary,
      settings=settings)


# ---------------------------------------------------------------------------
# Size and cost
# ---------------------------------------------------------------------------

def abstract_variables(model: nn.Module, image_shape: Sequence[int]):
  """The variables' shapes (`params`, `batch_stats`), with nothing computed."""
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  return jax.eval_shape(
      lambda k, x: model.init({"params": k, DROP_PATH_RNG: k}, x, train=False),
      jax.random.key(0), x)


def count_weights(params, include_auxiliary: bool = True) -> int:
  """Number of trainable weights; `include_auxiliary=False` leaves out the
  auxiliary head (the DARTS convention for reported sizes)."""
  if not include_auxiliary:
    params = {k: v for k, v in params.items() if k != AUX_NAME}
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      out = eqn.outvars[0].aval.shape
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += math.prod(out) * (math.prod(rhs) // out_features)
    elif name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    for sub in _sub_jaxprs(eqn.params):
      total += _jaxpr_macs(sub)
  return total


def _sub_jaxprs(params) -> list:
  subs = []
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        subs.append(v.jaxpr)
      elif isinstance(v, jax.extend.core.Jaxpr):
        subs.append(v)
  return subs


def count_macs(model: nn.Module, variables, image_shape: Sequence[int]) -> int:
  """Multiply-adds of one image through the network in evaluation mode:
  those of every convolution and dense layer (kernel size x input channels
  per group, per output element), read from the traced program; pooling,
  BatchNorm, activations and additions are not counted (the convention of
  the DARTS papers' "FLOPs" / "multi-adds"). Nothing is computed."""
  if dataclasses.is_dataclass(model) and hasattr(model, "settings"):
    # Count convolutions as convolutions, whatever kernel trains them.
    model = model.clone(settings=dataclasses.replace(model.settings, depthwise_impl="xla"))
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  variables = jax.tree_util.tree_map(
      lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables)
  closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
  return _jaxpr_macs(closed.jaxpr)


def describe_network(model: nn.Module, image_shape: Sequence[int]) -> dict:
  """Weights (with and without the auxiliary head) and multiply-adds."""
  variables = abstract_variables(model, image_shape)
  params = variables["params"]
  return {
      "weights": count_weights(params, include_auxiliary=False),
      "weights_with_auxiliary": count_weights(params, include_auxiliary=True),
      "macs": count_macs(model, variables, image_shape),
      "image_shape": list(image_shape),
  }


def param_count_table(params: Any) -> dict[str, int]:
  """Weights per top-level module (stem, cells, classifier, head)."""
  return {k: count_weights({k: v}) for k, v in params.items()}

