"""The mobile search space's network: a MobileNetV2 / ProxylessNAS chain of
inverted-residual (MBConv) blocks, each block one choice point.

Layout (ProxylessNAS's mobile setting, widths scaled by `width_mult` and
rounded to multiples of 8): a 3x3 stem conv to 32 channels, a fixed MBConv
(3x3, expansion 1) to 16, then six stages of `stage_blocks` blocks each
(default 4, 4, 4, 4, 4, 1) with widths 24, 40, 80, 96, 192, 320, a 1x1
conv to 1280, global pooling and a linear classifier. Every block chooses
its kernel (3, 5, 7) and expansion (3, 6): the registry's `mbconv_KxK_eE`
ops (`spaces.MOBILE_OPS`). A block that keeps its input's shape adds its input back (the
residual) and may also choose `none`, which leaves only the residual: the
block is skipped, so each stage chooses its depth. A stage's first block
changes the width (and the resolution, in a reducing stage), has no
residual and cannot be skipped. With `squeeze_excite` every MBConv
squeezes and excites after its depthwise conv (MnasNet).

Strides follow the image size (`reducing_layers`): ImageNet's 224 pixels
pass all five reductions (stem and four stages, 7x7 at the end); smaller
images keep only the last ones, so the last feature map is 4 to 7 pixels
wide (CIFAR's 32: 4x4; digits' 8: 4x4).

Two modules share the chain (`mobile_chain`): `MobileSupernet`, whose
blocks are mixed ops (static, or switched over slots, as the cell
supernets'), and `MobileNetwork`, the retrained network of a genotype (one
op per block, BatchNorm with running averages).
"""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from radars_jax.nas import ops as ops_lib
from radars_jax.nas.cells import EdgeModes, check_slots
from radars_jax.nas.mixed_ops import MixedOp, SwitchedMixedOp, mixing_weights
from radars_jax.nas.ops import BatchNorm, InvertedResidual, OpSettings
from radars_jax.nas.spaces import MOBILE_STAGE_BLOCKS

# (width, stride) of each stage; the stem reduces too, when the image is large enough
MOBILE_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2), (320, 1))
STEM_WIDTH, FIRST_WIDTH, HEAD_WIDTH = 32, 16, 1280
SMALLEST_FEATURE_MAP = 4   # reductions stop before the feature map gets narrower


def scaled_width(width: int, width_mult: float) -> int:
  """`width * width_mult` rounded to a multiple of 8, at least 8 (MobileNet's
  rounding)."""
  return max(8, int(width * width_mult + 4) // 8 * 8)


def reducing_layers(image_size: int) -> int:
  """How many of the network's five stride-2 layers (the stem, then the
  reducing stages) halve an image of `image_size` pixels: as many as keep
  the last feature map at least SMALLEST_FEATURE_MAP wide; the last ones."""
  positions = 1 + sum(stride == 2 for _, stride in MOBILE_STAGES)
  if image_size < SMALLEST_FEATURE_MAP:
    return 0
  return min(positions, int(math.floor(math.log2(image_size / SMALLEST_FEATURE_MAP))))


def block_plan(stage_blocks, width_mult: float, image_size: int):
  """(stem stride, [(width, stride, first of its stage) per block]) of the
  chain for images of `image_size` pixels."""
  if len(stage_blocks) != len(MOBILE_STAGES):
    raise ValueError(f"the mobile network has {len(MOBILE_STAGES)} stages, "
                     f"got blocks per stage {tuple(stage_blocks)}")
  reducing = [s for s, (_, stride) in enumerate(MOBILE_STAGES) if stride == 2]
  kept = reducing_layers(image_size)
  halving = set(([-1] + reducing)[len(reducing) + 1 - kept:])   # -1: the stem
  plan = []
  for s, ((width, _), n) in enumerate(zip(MOBILE_STAGES, stage_blocks)):
    for b in range(n):
      stride = 2 if b == 0 and s in halving else 1
      plan.append((scaled_width(width, width_mult), stride, b == 0))
  return (2 if -1 in halving else 1), plan


Block = Callable[[int, jnp.ndarray, int, int], jnp.ndarray]


def mobile_chain(x, train: bool, block: Block, stage_blocks, width_mult: float,
                 settings: OpSettings, num_classes: int):
  """The network on images `x`; `block(c, x, width, stride)` is block c's
  output without the residual (called inside a compact method, so the
  modules are the caller's). Stem, first block and head use affine
  BatchNorm with `settings`' running statistics."""
  fixed = OpSettings(affine=True, track_running_stats=settings.track_running_stats,
                     depthwise_impl=settings.depthwise_impl)
  stem_stride, plan = block_plan(stage_blocks, width_mult, x.shape[1])
  x = nn.Conv(scaled_width(STEM_WIDTH, width_mult), (3, 3), strides=stem_stride,
              padding=((1, 1), (1, 1)), use_bias=False, name="stem_conv")(x)
  x = ops_lib.relu(BatchNorm(fixed, name="stem_bn")(x, train))
  x = InvertedResidual(scaled_width(FIRST_WIDTH, width_mult), 3, 1, 1, fixed,
                       name="first_block")(x, train)
  for c, (width, stride, _) in enumerate(plan):
    y = block(c, x, width, stride)
    x = x + y if stride == 1 and x.shape[-1] == width else y
  x = nn.Conv(scaled_width(HEAD_WIDTH, width_mult), (1, 1), use_bias=False, name="head_conv")(
      ops_lib.relu(x))
  x = ops_lib.relu(BatchNorm(fixed, name="head_bn")(x, train))
  return nn.Dense(num_classes, name="classifier")(x.mean(axis=(1, 2)))


class MobileSupernet(EdgeModes):
  """The mobile search network over a subspace: block c is the mixed op of
  `block_ops[c]` (named `block_{c}`, so weights are `block_3/mbconv_5x5_e6/...`
  in every subspace). Its cells have no DAG to scan: `scan_edges` and
  `scan_switched` change nothing here."""
  block_ops: tuple[tuple[str, ...], ...]
  num_classes: int
  stage_blocks: tuple[int, ...] = MOBILE_STAGE_BLOCKS
  width_mult: float = 1.0
  settings: OpSettings = OpSettings()

  @nn.compact
  def __call__(self, x, alphas=None, train: bool = True, op_scales=None, slots=None):
    check_slots(self, slots)
    weights = mixing_weights(alphas, op_scales, slots)
    orders = self.slot_orders or (None,) * len(self.block_ops)

    def block(c, x, width, stride):
      w = None if weights is None else weights[c]
      if self.switched:
        return SwitchedMixedOp(self.block_ops[c], width, stride, self.settings, orders[c],
                               name=f"block_{c}")(x, w, slots[c], train)
      return MixedOp(self.block_ops[c], width, stride, self.settings, name=f"block_{c}")(
          x, w, train)

    return mobile_chain(x, train, block, self.stage_blocks, self.width_mult, self.settings,
                        self.num_classes)


class MobileNetwork(nn.Module):
  """The retrained network of a mobile genotype: one op per block (`none`:
  the block is skipped)."""
  block_ops: tuple[str, ...]
  num_classes: int
  stage_blocks: tuple[int, ...] = MOBILE_STAGE_BLOCKS
  width_mult: float = 1.0
  settings: OpSettings = OpSettings(affine=True, track_running_stats=True)

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob=None):
    del drop_prob   # trained without drop path

    def block(c, x, width, stride):
      name = self.block_ops[c]
      if name == "none":
        return jnp.zeros_like(x)
      return ops_lib.make_op(name, width, stride, self.settings, f"block_{c}")(x, train)

    return mobile_chain(x, train, block, self.stage_blocks, self.width_mult, self.settings,
                        self.num_classes), None
