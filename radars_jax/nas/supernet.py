"""The search supernets: Flax networks built from a (static) subspace.

A static supernet (`build_supernet(space, subspace, ...)`) holds only the
ops of its subspace (`mixed_ops.MixedOp` per choice point): one module,
hence one compiled step, per subspace. A *switched* supernet
(`build_supernet(..., switched=True)`) holds every op of the space and takes
the active ops as data, `slots` (`subspace_slots`; `mixed_ops.SwitchedMixedOp`
per choice point): one compiled program serves every subspace of at most k
ops per choice point, with the numbers of that subspace's static supernet.
Against the costliest static subspace of k ops it needs fewer bytes
(experiments/shared_programs.py, docs/performance.md); the loop still checks
its compiled bytes against the budget like any step's. How the cells compute
their edges (per edge or scanned; the same numbers) is in
`radars_jax.nas.cells`.

Networks:
- `DartsSupernet`: the DARTS search network (stem multiplier 3, `layers`
  cells, reductions at 1/3 and 2/3 of the depth, 4 nodes per cell).
- `NB201Supernet`: the NAS-Bench-201 skeleton (3 stages of
  `cells_per_stage` cells with residual reduction blocks between them).
- `MobileSupernet` (`radars_jax.nas.mobile`): a chain of MBConv blocks.

Helpers: alphas (`init_alphas`) and their slotted form (`subspace_slots`,
`to_slots`, `from_slots`); weights (`param_shapes`, `init_params`, drawn per
edge without running the network) and the choice point and op that own each
(`param_owners`, `active_params`).
"""
from __future__ import annotations

import functools
import zlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import config_defaults
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import weight_pool
from radars_jax.errors import UserError
from radars_jax.nas.cells import (DartsSearchCell, EdgeModes, NB201SearchCell, ResNetBasicBlock,
                                  check_slots)
from radars_jax.nas.mixed_ops import mixing_weights
from radars_jax.nas.mobile import MobileSupernet
from radars_jax.nas.ops import BatchNorm, OpSettings

Alphas = Sequence[jax.Array]   # one [n_active] vector per choice point
Slots = jax.Array   # int32 [num_choice_points, k]: op index per slot, -1 = empty


def reduction_cells(layers: int) -> tuple[int, int]:
  """The DARTS network's reduction cells: at 1/3 and 2/3 of the depth."""
  return layers // 3, 2 * layers // 3


def _cell_modes(net: EdgeModes, slot_orders) -> dict:
  """A network's `EdgeModes` as keywords for one of its cells, whose edges'
  slot orders are `slot_orders`."""
  return dict(switched=net.switched, slot_orders=slot_orders,
              scan_edges=net.scan_edges, scan_switched=net.scan_switched)


class DartsSupernet(EdgeModes):
  """The DARTS CIFAR search network over a subspace."""
  normal_ops: tuple[tuple[str, ...], ...]
  reduce_ops: tuple[tuple[str, ...], ...]
  num_classes: int
  channels: int = 16
  layers: int = 8
  steps: int = spaces_lib.DARTS_STEPS
  stem_multiplier: int = 3
  settings: OpSettings = OpSettings()

  @nn.compact
  def __call__(self, x, alphas: Alphas | None = None, train: bool = True,
               op_scales: Alphas | None = None, slots: Slots | None = None):
    check_slots(self, slots)
    n = len(self.normal_ops)
    orders = self.slot_orders or (None,) * (2 * n)
    weights = mixing_weights(alphas, op_scales, slots)
    w_normal, w_reduce = (None, None) if weights is None else (weights[:n], weights[n:])
    slots_normal, slots_reduce = (None, None) if slots is None else (slots[:n], slots[n:])
    c = self.channels
    stem_settings = OpSettings(affine=True,
                               track_running_stats=self.settings.track_running_stats)
    x = nn.Conv(self.stem_multiplier * c, (3, 3), padding=((1, 1), (1, 1)),
                use_bias=False, name="stem_conv")(x)
    s0 = s1 = BatchNorm(stem_settings, name="stem_bn")(x, train)
    reduction_prev = False
    for i in range(self.layers):
      reduction = i in reduction_cells(self.layers)
      if reduction:
        c *= 2
      cell = DartsSearchCell(self.reduce_ops if reduction else self.normal_ops,
                             c, reduction, reduction_prev, self.settings, self.steps,
                             **_cell_modes(self, orders[n:] if reduction else orders[:n]),
                             name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, w_reduce if reduction else w_normal, train,
                        slots_reduce if reduction else slots_normal)
      reduction_prev = reduction
    return nn.Dense(self.num_classes, name="classifier")(s1.mean(axis=(1, 2)))


class NB201Supernet(EdgeModes):
  """The NAS-Bench-201 network: stem, 3 stages of cells, residual reductions."""
  edge_ops: tuple[tuple[str, ...], ...]
  num_classes: int
  channels: int = 16
  cells_per_stage: int = 5
  settings: OpSettings = OpSettings(pool_bn=False)

  @nn.compact
  def __call__(self, x, alphas: Alphas | None = None, train: bool = True,
               op_scales: Alphas | None = None, slots: Slots | None = None):
    check_slots(self, slots)
    weights = mixing_weights(alphas, op_scales, slots)
    block_settings = OpSettings(affine=True,
                                track_running_stats=self.settings.track_running_stats)
    c = self.channels
    x = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem_conv")(x)
    x = BatchNorm(block_settings, name="stem_bn")(x, train)
    for stage in range(3):
      if stage > 0:
        c *= 2
        x = ResNetBasicBlock(c, block_settings, name=f"reduce_{stage}")(x, train)
      for i in range(self.cells_per_stage):
        x = NB201SearchCell(self.edge_ops, c, self.settings,
                            **_cell_modes(self, self.slot_orders),
                            name=f"cell_{stage}_{i}")(x, weights, train, slots)
    x = ops_lib.relu(BatchNorm(block_settings, name="last_bn")(x, train))
    return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))


def build_supernet(space: spaces_lib.SearchSpace, subspace: spaces_lib.Subspace | None,
                   supernet_config: Any, num_classes: int, switched: bool = False,
                   slot_orders=None) -> nn.Module:
  """The supernet of `space` restricted to `subspace` (static: one module,
  hence one compiled step, per subspace), or with `switched=True` (and
  `subspace=None`) the switched supernet of the whole space, whose active
  ops are the `slots` argument (`slot_orders`: per choice point its ops,
  costliest first, see `mixed_ops.SwitchedMixedOp`). Fields `supernet_config` lacks
  have their defaults (`config_defaults.complete`)."""
  supernet_config = config_defaults.complete(supernet_config, "supernet")
  if slot_orders is not None:
    slot_orders = tuple(tuple(int(o) for o in order) for order in slot_orders)
  if switched:
    if subspace is not None:
      raise ValueError("a switched supernet holds the whole space: pass subspace=None")
    subspace = space.full_subspace()
  subspace = space.check_subspace(subspace, allow_empty=True)
  names = space.op_names_of(subspace)
  impl = supernet_config.depthwise_impl
  scan = bool(supernet_config.scan_edges)
  scan_switched = bool(supernet_config.scan_switched)
  if scan:
    ops_lib.check_scannable(n for ops in names for n in ops)
  if space.kind == "darts_cell":
    steps = supernet_config.steps
    n = len(spaces_lib.darts_edges(steps))
    if 2 * n != space.num_choice_points:
      raise UserError(
          f"supernet.steps={steps} gives DARTS cells of {n} edges, but space "
          f"{space.name!r} has {space.num_choice_points} choice points (2 cells x "
          f"{space.num_choice_points // 2} edges, {spaces_lib.DARTS_STEPS} nodes per cell): "
          f"set supernet.steps={spaces_lib.DARTS_STEPS}")
    return DartsSupernet(
        normal_ops=names[:n], reduce_ops=names[n:], num_classes=num_classes,
        channels=supernet_config.channels, layers=supernet_config.layers,
        steps=steps, stem_multiplier=supernet_config.stem_multiplier,
        settings=OpSettings(pool_bn=True, depthwise_impl=impl),
        switched=switched, slot_orders=slot_orders, scan_edges=scan,
        scan_switched=scan_switched)
  if space.kind == "nb201_cell":
    return NB201Supernet(
        edge_ops=names, num_classes=num_classes, channels=supernet_config.channels,
        cells_per_stage=supernet_config.cells_per_stage,
        settings=OpSettings(pool_bn=False, depthwise_impl=impl),
        switched=switched, slot_orders=slot_orders, scan_edges=scan,
        scan_switched=scan_switched)
  if space.kind == "mobile":
    return MobileSupernet(
        block_ops=names, num_classes=num_classes, stage_blocks=space.stage_blocks,
        width_mult=float(supernet_config.width_mult),
        settings=OpSettings(pool_bn=False, depthwise_impl=impl,
                            squeeze_excite=space.squeeze_excite),
        switched=switched, slot_orders=slot_orders)
  raise ValueError(f"unknown space kind {space.kind!r}")


def init_alphas(key: jax.Array, subspace: spaces_lib.Subspace,
                scale: float = 1e-3) -> tuple[jax.Array, ...]:
  """One small random vector per choice point over its active ops (DARTS:
  1e-3 * N(0, 1))."""
  # (the draws in one small program, the scaling on the host: op by op each
  # length would compile its own programs, and a scaling inside the program
  # would be fused into the draw, moving the values by up to 2e-10)
  lengths = [len(active) for active in subspace]
  normals = _unit_normals(key, (len(lengths), max(lengths)))
  if isinstance(normals, jax.core.Tracer):   # (inside a trace)
    return tuple(scale * normals[c, :n] for c, n in enumerate(lengths))
  normals = np.asarray(normals)
  return tuple(jax.device_put(normals[c, :n] * np.float32(scale))
               for c, n in enumerate(lengths))


@functools.partial(jax.jit, static_argnums=(1,))
def _unit_normals(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """[choice points, longest] N(0, 1) draws, row c from the c-th key of
  `key`'s split. Row c's first n values are `jax.random.normal(keys[c],
  (n,))`: with JAX's partitionable threefry (its default) each value is a
  function of the key and its index only. So every choice point's vector
  is the draw of its own length, from one threefry program."""
  keys = jax.random.split(key, shape[0])
  return jax.vmap(lambda k: jax.random.normal(k, (shape[1],), jnp.float32))(keys)


def subspace_slots(subspace: spaces_lib.Subspace, k: int, slot_orders=None) -> np.ndarray:
  """A subspace as the `slots` of a switched supernet: int32 [C, k], each
  choice point's active ops in its slot order (default: as listed), then
  -1 (empty slots)."""
  out = -np.ones((len(subspace), k), np.int32)
  for c, active in enumerate(subspace):
    if len(active) > k:
      raise ValueError(f"choice point {c} has {len(active)} active ops, more than k = {k}")
    order = list(slot_orders[c]) if slot_orders is not None else None
    out[c, :len(active)] = sorted(active, key=order.index) if order else active
  return out


def to_slots(vectors, subspace: spaces_lib.Subspace, slots) -> tuple[jax.Array, ...]:
  """Per choice point, a vector over the subspace's active ops (alphas or op
  scales, in subspace order) moved to the slots' order, zero-padded to k."""
  slots = np.asarray(slots)
  out = []
  for c, (v, active) in enumerate(zip(vectors, subspace)):
    v = np.asarray(v, np.float32)   # (on the host: a few numbers, nothing to compile)
    where = [active.index(int(o)) for o in slots[c] if o >= 0]
    row = np.zeros((slots.shape[1],), np.float32)
    row[:len(where)] = v[np.asarray(where, np.int32)]
    out.append(jax.device_put(row))
  return tuple(out)


def from_slots(vectors, subspace: spaces_lib.Subspace, slots) -> list[np.ndarray]:
  """The inverse of `to_slots`: per choice point, the vector over the
  active ops in subspace order."""
  slots = np.asarray(slots)
  out = []
  for c, (v, active) in enumerate(zip(vectors, subspace)):
    v = np.asarray(v)
    slot_of = {int(o): s for s, o in enumerate(slots[c]) if o >= 0}
    out.append(np.asarray([v[slot_of[o]] for o in active], v.dtype))
  return out


def choice_point_of(model: nn.Module, space: spaces_lib.SearchSpace, path) -> int | None:
  """The choice point of the module or param at `path` (a sequence of
  names, `("cell_3", "edge_1_4", ...)`), None outside every edge."""
  parts = list(path)
  if isinstance(model, MobileSupernet):
    return next((int(part.split("_")[1]) for part in parts if part.startswith("block_")), None)
  at = next((i for i, part in enumerate(parts) if part.startswith("edge_")), None)
  if at is None:
    return None
  src, dst = (int(v) for v in parts[at].split("_")[1:3])
  if isinstance(model, DartsSupernet):
    edges = spaces_lib.darts_edges(model.steps)
    cell = int(parts[at - 1].split("_")[1])
    return edges.index((src, dst)) + (len(edges) if cell in reduction_cells(model.layers) else 0)
  del space
  return spaces_lib.nb201_edges().index((src, dst))


def param_owners(model: nn.Module, space: spaces_lib.SearchSpace,
                 paths) -> dict[str, tuple[int, int]]:
  """{param path: (choice point, op index)} for the weights of candidate
  ops (`cell_3/edge_1_4/sep_conv_3x3/...`); stems, preprocessing and the
  classifier belong to no choice point and are left out."""
  owners = {}
  for path in paths:
    parts = path.split("/")
    c = choice_point_of(model, space, parts)
    if c is not None:
      at = next(i for i, part in enumerate(parts) if part.startswith(("edge_", "block_")))
      owners[path] = (c, space.choice_points[c].ops.index(parts[at + 1]))
  return owners


def active_params(owners: dict[str, tuple[int, int]], weights, slots: Slots):
  """A tree like `weights` of bool scalars: True where the weight belongs to
  no choice point or to an op in `slots` (traceable)."""
  flat = weight_pool.flatten(weights)
  return weight_pool.unflatten({
      path: (jnp.asarray(True) if path not in owners
             else jnp.any(slots[owners[path][0]] == owners[path][1]))
      for path in flat})


def count_params(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def param_shapes(model: nn.Module, image_shape: Sequence[int], alphas=None, slots=None):
  """Abstract parameter tree (shapes only, nothing runs)."""
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  if getattr(model, "switched", False) and slots is None:
    slots = np.zeros((len(model_choice_points(model)), 1), np.int32)
  variables = jax.eval_shape(lambda x, alphas, slots: model.init(
      jax.random.key(0), x, alphas, slots=slots), x, alphas, slots)
  return variables["params"]


def model_choice_points(model: nn.Module) -> tuple:
  """The per-choice-point op lists the supernet was built with."""
  if isinstance(model, DartsSupernet):
    return tuple(model.normal_ops) + tuple(model.reduce_ops)
  if isinstance(model, MobileSupernet):
    return tuple(model.block_ops)
  return tuple(model.edge_ops)


def _lecun_normal(rng: np.random.Generator, shape) -> np.ndarray:
  """Flax's `lecun_normal` (truncated at 2 std, fan-in = all but the last
  axis) drawn with numpy."""
  fan_in = max(int(np.prod(shape[:-1])), 1)
  std = np.sqrt(1.0 / fan_in) / 0.87962566103423978
  x = rng.standard_normal(shape)
  bad = np.abs(x) > 2.0
  while bad.any():
    x[bad] = rng.standard_normal(int(bad.sum()))
    bad = np.abs(x) > 2.0
  return (x * std).astype(np.float32)


def init_params(model: nn.Module, image_shape: Sequence[int], alphas, key: jax.Array,
                shapes=None):
  """Fresh weights without running the network: shapes from `eval_shape`
  (or `shapes`, the model's `param_shapes` if known), then each leaf drawn
  on the host from a generator seeded by the key and its path (kernels
  LeCun-normal, biases 0, scales 1). The same op on the same edge gets the
  same initial weights in every subspace, and nothing is compiled (a jitted
  initialiser cost seconds of compile per subspace). Drawn per edge
  (`weight_pool.canonical` paths), so a scanned supernet starts from the
  per-edge one's values."""
  if shapes is None:
    shapes = param_shapes(model, image_shape, alphas)
  flat = weight_pool.canonical(shapes)
  seed = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
  out = {}
  for path, shape in flat.items():
    name = path.rsplit("/", 1)[-1]
    if name == "scale":
      value = np.ones(shape.shape, np.float32)
    elif name == "bias":
      value = np.zeros(shape.shape, np.float32)
    else:
      rng = np.random.default_rng(seed + [zlib.crc32(path.encode())])
      value = _lecun_normal(rng, shape.shape)
    out[path] = np.asarray(value, shape.dtype)
  # (device_put, not jnp.asarray: that compiles a program per new shape)
  return jax.device_put(weight_pool.restack(out, shapes))
