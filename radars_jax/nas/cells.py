"""The search cells of the supernets, and how a cell computes its edges.

A cell's DAG: node t = the sum over edges (s, t) of the mixed op of edge
(s, t) on state s. A cell computes its edges in one of two ways, with
the same numbers (`_cell_states`):
- per edge: one `MixedOp` (static) or `SwitchedMixedOp` (switched) each;
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
import jax.numpy as jnp

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
  switched: bool = _keyword(False)   # every op of the space; slots pick the active ones
  # per choice point (a cell's: per edge), `SwitchedMixedOp.order`
  slot_orders: tuple | None = _keyword(None)
  scan_edges: bool = _keyword(False)   # static: via `scanned_dag` where `scannable`
  scan_switched: bool = _keyword(False)   # switched: the same, weights per edge as unscanned


def check_slots(module: EdgeModes, slots) -> None:
  """Refuses `slots` a supernet cannot take: none for a switched one (it
  would not know which ops run), some for a static one (it would ignore
  them)."""
  if module.switched and slots is None:
    raise ValueError("a switched supernet needs `slots` (the ops each choice point runs)")
  if slots is not None and not module.switched:
    raise ValueError("`slots` given to a static supernet: build it with switched=True")


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
  `scan_edges`) where `scannable`, else per edge.
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
