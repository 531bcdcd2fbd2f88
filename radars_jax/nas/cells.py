"""The search cells of the supernets, and how a cell computes its edges.

A cell's DAG: node t = the sum over edges (s, t) of the mixed op of edge
(s, t) on state s. A cell computes its edges in one of four ways, all with
the same numbers (`_cell_states`):
- per edge: one `MixedOp` (static) or `SwitchedMixedOp` (switched) each;
- stacked (`supernet.stack_edges`, static): `mixed_dag`, in waves, each op
  once on the stacked inputs of all the edges where it is active;
- scanned (`supernet.scan_edges` static, `supernet.scan_switched`
  switched): `edge_scan.scanned_dag`, the edges in one `lax.scan`.

Parameter paths name the cell, the edge and the op
(`cell_3/edge_1_4/sep_conv_3x3/...`) whichever the way (a static scan
stores its edges' weights stacked; `weight_pool.canonical` gives the
per-edge paths), so the same op on the same edge has the same path in
every subspace: that is what `weight_pool` keys on.

Cells: `DartsSearchCell` (two preprocessed inputs, `steps` nodes, output
the concatenated nodes) and `NB201SearchCell` (one input, output the last
node); `ResNetBasicBlock` reduces between NAS-Bench-201 stages.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas.edge_scan import scannable, scanned_dag
from radars_jax.nas.mixed_ops import MixedOp, SwitchedMixedOp, accumulate
from radars_jax.nas.ops import FactorizedReduce, OpSettings, ReLUConvBN


def _keyword(default):
  """A keyword-only module field. A base's fields come before a subclass's
  own, and a field with a default may stand ahead of fields without one
  only if it is keyword-only."""
  return dataclasses.field(default=default, kw_only=True)


class EdgeModes(nn.Module):
  """How a search cell computes its edges (every way the same numbers) and
  whether its mixed ops are switched: the base of the cells, and of the
  networks, which pass these fields on to their cells (`_cell_states`
  reads them). Keyword-only, so each module's own fields keep their
  positions."""
  stack_edges: bool = _keyword(False)   # compute via `mixed_dag`
  switched: bool = _keyword(False)   # every op of the space; slots pick the active ones
  # per choice point (a cell's: per edge), `SwitchedMixedOp.order`
  slot_orders: tuple | None = _keyword(None)
  scan_edges: bool = _keyword(False)   # static: via `scanned_dag` where `scannable`
  scan_switched: bool = _keyword(False)   # switched: the same, weights per edge as unscanned


class EdgeOps(nn.Module):
  """One choice point inside `mixed_dag`: declares the weights of its
  stackable ops (returned, computed by the cell for all edges at once) and
  runs the others itself. Weightless shared ops are left to the cell."""
  op_names: tuple[str, ...]
  channels: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    params, outputs = {}, {}
    for name in self.op_names:
      if name == "none" or ops_lib.is_shared(name, self.stride):
        continue
      schema = ops_lib.param_schema(name, self.channels, self.stride)
      if schema is not None:
        params[name] = ops_lib.Params(schema, name=name)()
      else:
        outputs[name] = ops_lib.make_op(name, self.channels, self.stride, self.settings)(
            x, train)
    return params, outputs


def mixed_dag(states: list, edges, edge_ops, edge_weights, channels: int, strides,
              settings: OpSettings, train: bool = True) -> list:
  """The nodes of a search cell: node t = sum over edges (s, t) of the
  mixed op of edge (s, t) on state s; `states` are the cell inputs, the
  nodes are appended in order (edges must go from lower to higher states).

  The same numbers as one `MixedOp` per edge, computed in waves: the
  edges leaving the inputs, then those leaving each node as soon as it is
  complete. Within a wave each op runs once on the stacked inputs of all
  the edges where it is active (`ops_lib.stacked_op`), and a weightless op
  (pooling, identity) once per state, whichever edges use it. So the
  program has several times fewer ops than per-edge mixed ops (XLA
  compiles it faster) and the kernels are larger.
  """
  n_in = len(states)
  targets = sorted({dst for _, dst in edges})
  states = list(states) + [None] * len(targets)
  pending = {t: None for t in targets}
  zeros_like = {}

  def add(e, name, y):
    """Adds op `name`'s output on edge `e`, weighted, to the edge's target."""
    if edge_weights is not None:
      y = edge_weights[e][edge_ops[e].index(name)].astype(y.dtype) * y
    t = edges[e][1]
    pending[t] = y if pending[t] is None else pending[t] + y

  waves = [tuple(range(n_in))] + [(t,) for t in targets]
  for wave in waves:
    for t in wave:
      if t >= n_in:
        states[t] = pending[t] if pending[t] is not None else zeros_like[t]
    wave_edges = [e for e, (src, _) in enumerate(edges) if src in wave]
    stacked = {}   # (op, stride) -> [(edge, params)]
    shared = {}    # (op, src, stride) -> [edge]
    for e in wave_edges:
      src, dst = edges[e]
      x = states[src]
      stride = strides[e]
      zeros_like.setdefault(dst, jnp.zeros_like(x[:, ::stride, ::stride, :]))
      params, outputs = EdgeOps(edge_ops[e], channels, stride, settings,
                                name=f"edge_{src}_{dst}")(x, train)
      for name, y in outputs.items():
        add(e, name, y)
      for name, p in params.items():
        stacked.setdefault((name, stride), []).append((e, p))
      for name in edge_ops[e]:
        if name != "none" and ops_lib.is_shared(name, stride):
          shared.setdefault((name, src, stride), []).append(e)
    for (name, src, stride), es in shared.items():
      y = ops_lib.shared_op(name, states[src], stride, settings)
      for e in es:
        add(e, name, y)
    for (name, stride), members in stacked.items():
      xs = jnp.stack([states[edges[e][0]] for e, _ in members])
      ps = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[p for _, p in members])
      ys = ops_lib.stacked_op(name, ps, xs, stride, settings)
      for i, (e, _) in enumerate(members):
        add(e, name, ys[i])
  return states


def _edge(switched: bool, op_names, channels, stride, settings, name, x, edge_weights,
          edge_slots, e: int, train: bool, slot_orders=None):
  """Edge `e`'s mixed op on `x` (static or switched; called inside a cell)."""
  weights = None if edge_weights is None else edge_weights[e]
  if switched:
    order = None if slot_orders is None else slot_orders[e]
    return SwitchedMixedOp(op_names, channels, stride, settings, order, name=name)(
        x, weights, edge_slots[e], train)
  return MixedOp(op_names, channels, stride, settings, name=name)(x, weights, train)


def _cell_states(cell, inputs, edges, strides, edge_weights, train: bool, edge_slots):
  """The states of a search cell's DAG (its inputs, then its nodes), by the
  cell's way of computing its edges: scanned (switched, or static with
  `scan_edges`) where `scannable`, stacked (`stack_edges`), else per edge.
  `cell`: a `DartsSearchCell` or `NB201SearchCell` (`EdgeModes`; called in
  its compact method, so the submodules are its own)."""
  ops, c, st = cell.edge_ops, cell.channels, cell.settings
  if cell.switched and cell.scan_switched:
    orders = cell.slot_orders or (None,) * len(edges)
    if scannable(edges, ops, strides, st, orders):
      return scanned_dag(inputs, edges, ops, edge_weights, c, strides, st, train, edge_slots,
                         orders)
  if cell.scan_edges and not cell.switched and scannable(edges, ops, strides, st):
    return scanned_dag(inputs, edges, ops, edge_weights, c, strides, st, train)
  if cell.stack_edges and ops_lib.stackable(st) and not cell.switched:
    return mixed_dag(inputs, edges, ops, edge_weights, c, strides, st, train)
  states = list(inputs)
  for e, (src, dst) in enumerate(edges):
    if src == 0:
      states.append(None)  # node dst starts empty
    states[dst] = accumulate(states[dst], _edge(
        cell.switched, ops[e], c, strides[e], st, f"edge_{src}_{dst}", states[src],
        edge_weights, edge_slots, e, train, cell.slot_orders))
  return states


def preprocess_cell_inputs(s0, s1, channels: int, settings: OpSettings, reduction_prev: bool,
                           train: bool):
  """A DARTS cell's two inputs brought to `channels` (the eval cell and the
  search cell alike; called inside the cell's compact method, so the
  modules `preprocess0` and `preprocess1` are the cell's): the older one
  halved in size where the previous cell reduced."""
  if reduction_prev:
    s0 = FactorizedReduce(channels, settings, name="preprocess0")(s0, train)
  else:
    s0 = ReLUConvBN(channels, 1, 1, 0, settings, name="preprocess0")(s0, train)
  s1 = ReLUConvBN(channels, 1, 1, 0, settings, name="preprocess1")(s1, train)
  return s0, s1


class DartsSearchCell(EdgeModes):
  """DARTS cell: two preprocessed inputs, `steps` nodes, each the sum of
  mixed ops over all earlier states; output = concat of the nodes."""
  edge_ops: tuple[tuple[str, ...], ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  settings: OpSettings
  steps: int = spaces_lib.DARTS_STEPS

  @nn.compact
  def __call__(self, s0, s1, edge_weights=None, train: bool = True, edge_slots=None):
    s0, s1 = preprocess_cell_inputs(s0, s1, self.channels, self.settings,
                                    self.reduction_prev, train)
    edges = spaces_lib.darts_edges(self.steps)
    strides = [2 if self.reduction and src < 2 else 1 for src, _ in edges]
    states = _cell_states(self, [s0, s1], edges, strides, edge_weights, train, edge_slots)
    return jnp.concatenate(states[2:], axis=-1)


class ResNetBasicBlock(nn.Module):
  """NAS-Bench-201 reduction block: two 3x3 ReLU-conv-BN (the first with
  stride 2) plus a shortcut of 2x2 average pooling and a 1x1 conv."""
  channels: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True):
    y = ReLUConvBN(self.channels, 3, 2, 1, self.settings, name="conv_a")(x, train)
    y = ReLUConvBN(self.channels, 3, 1, 1, self.settings, name="conv_b")(y, train)
    shortcut = nn.avg_pool(x, (2, 2), (2, 2))
    shortcut = nn.Conv(self.channels, (1, 1), use_bias=False, name="shortcut")(shortcut)
    return shortcut + y


class NB201SearchCell(EdgeModes):
  """NAS-Bench-201 cell: node i = sum over j < i of mixed_op(j->i)(node j)."""
  edge_ops: tuple[tuple[str, ...], ...]
  channels: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, edge_weights=None, train: bool = True, edge_slots=None):
    edges = spaces_lib.nb201_edges()
    strides = [1] * len(edges)
    return _cell_states(self, [x], edges, strides, edge_weights, train, edge_slots)[-1]
