"""A per-op memory cost model: how many bytes a subspace's train step needs,
without compiling it.

Compiling a step and reading XLA's `memory_analysis()` (`radars_jax.memory`)
is exact but takes seconds to minutes per subspace. Sizing the subspace
(how many ops per choice point fit the budget) would compile many candidates,
so instead:

1. *Trace* (no compile): for each op and each group of equivalent choice
   points (same input and output shapes: the normal cell's edges, the
   reduction cell's strided input edges, its inner edges; all NB201 edges),
   the network with only that op on that group's edges is traced with
   `jax.make_jaxpr` on abstract inputs; the bytes of every intermediate value
   plus 4x the parameter bytes (weights, gradients, momentum, update) is the
   op's traced cost there, minus that of the network with no op at all.
   A subspace's traced cost is the empty network's plus the sum of its ops'.
2. *Calibrate*: compiled bytes = intercept + slope * traced bytes, fitted by
   least squares on a few real compiles (two at the start; every subspace
   the search compiles afterwards adds a point).

`largest_k` is the largest number of ops per choice point whose *worst case*
(the k costliest alive ops at every choice point) fits the budget, so every
subspace the controller can draw fits.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import spaces as spaces_lib
from radars_jax import supernet as supernet_lib


def choice_point_groups(space: spaces_lib.SearchSpace) -> np.ndarray:
  """int [num_choice_points]: choice points with equal group ids see inputs
  and outputs of the same shapes (so an op costs the same on each)."""
  if space.kind == "darts_cell":
    edges = spaces_lib.darts_edges()
    n = len(edges)
    groups = [0] * n + [1 if src < 2 else 2 for src, _ in edges]
    return np.asarray(groups[:space.num_choice_points])
  return np.zeros(space.num_choice_points, int)


def _jaxpr_bytes(jaxpr) -> int:
  """Bytes of every value an equation produces, sub-jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      aval = getattr(var, "aval", None)
      if aval is not None and hasattr(aval, "shape") and hasattr(aval, "dtype"):
        total += int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None and hasattr(inner, "eqns"):
          total += _jaxpr_bytes(inner)
        elif hasattr(sub, "eqns"):
          total += _jaxpr_bytes(sub)
  return total


def traced_bytes(space, subspace, supernet_config, num_classes: int, image_shape,
                 batch_size: int) -> int:
  """Activation bytes of one forward pass of the supernet of `subspace`
  (per-device batch), plus 4x its parameter bytes. Traced, not compiled."""
  model = supernet_lib.build_supernet(space, subspace, supernet_config, num_classes)
  alphas = tuple(jax.ShapeDtypeStruct((len(a),), jnp.float32) for a in subspace)
  params = supernet_lib.param_shapes(model, image_shape, alphas)
  x = jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda p, a, x: model.apply({"params": p}, x, a))(params, alphas, x)
  param_bytes = sum(int(np.prod(l.shape)) * np.dtype(l.dtype).itemsize
                    for l in jax.tree_util.tree_leaves(params))
  return _jaxpr_bytes(jaxpr.jaxpr) + 4 * param_bytes


def live_ops(space: spaces_lib.SearchSpace, mask) -> np.ndarray:
  """`mask` without the ops XLA removes as dead code. In a NAS-Bench-201
  cell only node 3 is output: an edge whose target has no path of
  non-`none` edges to node 3 computes values nobody uses. (DARTS cells
  concatenate every node, so every op there is live.)"""
  mask = np.array(mask, bool)
  if space.kind != "nb201_cell":
    return mask
  edges = spaces_lib.nb201_edges()
  carries = [any(mask[c, o] and space.choice_points[c].ops[o] != "none"
                 for o in range(len(space.choice_points[c].ops))) for c in range(len(edges))]
  useful = {spaces_lib.NB201_NODES - 1}
  for node in range(spaces_lib.NB201_NODES - 2, -1, -1):
    if any(carries[c] and src == node and dst in useful for c, (src, dst) in enumerate(edges)):
      useful.add(node)
  for c, (_, dst) in enumerate(edges):
    if dst not in useful:
      mask[c] = False
  return mask


@dataclasses.dataclass
class CostModel:
  """bytes(subspace) ~ intercept + slope * (empty + sum of per-op costs).

  per_op: float [num_choice_points, max_ops] traced bytes of each op at each
  choice point; points: (traced, compiled) pairs of real compiles; space:
  to drop dead ops (`live_ops`)."""
  empty: float
  per_op: np.ndarray
  space: Any = None
  points: list = dataclasses.field(default_factory=list)
  slope: float = 1.0
  intercept: float = 0.0

  def traced(self, mask) -> float:
    mask = np.asarray(mask, bool)
    if self.space is not None:
      mask = live_ops(self.space, mask)
    return float(self.empty + np.sum(np.where(mask, self.per_op, 0.0)))

  def estimate(self, mask) -> float:
    """Estimated compiled bytes of the step of the subspace `mask`
    (bool [num_choice_points, max_ops])."""
    return self.intercept + self.slope * self.traced(mask)

  def add_point(self, mask, compiled: float) -> None:
    """Record a real compile and refit."""
    if compiled > 0:
      self.points.append((self.traced(mask), float(compiled)))
      self.fit()

  def fit(self) -> None:
    """Least squares on the points; one point (or points too close): a
    line through the origin. The slope is kept positive."""
    if not self.points:
      return
    x = np.array([p[0] for p in self.points])
    y = np.array([p[1] for p in self.points])
    if len(self.points) >= 2 and np.ptp(x) > 0.05 * np.mean(x):
      slope, intercept = np.polyfit(x, y, 1)
      if slope > 0:
        self.slope, self.intercept = float(slope), float(intercept)
        return
    self.slope, self.intercept = float(np.sum(x * y) / np.sum(x * x)), 0.0

  def worst_case(self, alive, k: int) -> np.ndarray:
    """bool mask of the k costliest alive ops at every choice point (all of
    them where fewer than k are alive)."""
    alive = np.asarray(alive, bool)
    cost = np.where(alive, self.per_op, -np.inf)
    order = np.argsort(-cost, axis=-1, kind="stable")[:, :k]
    mask = np.zeros_like(alive)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask & alive

  def slot_orders(self) -> tuple[tuple[int, ...], ...]:
    """Per choice point, its ops costliest first (a switched supernet's
    `slot_orders`: slot s then leaves the s costliest ops out of its switch)."""
    assert self.space is not None, "slot_orders needs the space"
    return tuple(tuple(int(o) for o in np.argsort(-self.per_op[c, :len(cp.ops)], kind="stable"))
                 for c, cp in enumerate(self.space.choice_points))

  def largest_k(self, alive, budget: float) -> int:
    """The largest k whose worst case fits `budget` (0 if not even k = 1)."""
    alive = np.asarray(alive, bool)
    best = 0
    for k in range(1, int(alive.sum(-1).max()) + 1):
      if self.estimate(self.worst_case(alive, k)) <= budget:
        best = k
      else:
        break
    return best

  def to_json(self) -> dict:
    """Everything but the space (JSON)."""
    return {"empty": self.empty, "per_op": self.per_op.tolist(), "points": self.points,
            "slope": self.slope, "intercept": self.intercept}

  @classmethod
  def from_json(cls, d: dict, space=None) -> "CostModel":
    return cls(float(d["empty"]), np.asarray(d["per_op"], float), space,
               [tuple(p) for p in d["points"]], float(d["slope"]), float(d["intercept"]))


def trace_cost_model(space, supernet_config, num_classes: int, image_shape,
                     batch_size: int, progress: Any = None) -> CostModel:
  """Per-op traced costs: one trace of the empty network, one per (group,
  op). `progress`: optional callable(done, total)."""
  groups = choice_point_groups(space)
  empty_subspace = tuple(() for _ in space.choice_points)
  trace = lambda sub: traced_bytes(space, sub, supernet_config, num_classes, image_shape,
                                   batch_size)
  empty = trace(empty_subspace)
  per_op = np.zeros((space.num_choice_points, space.max_ops))
  group_ids = sorted(set(groups.tolist()))
  total = len(group_ids) * space.max_ops
  done = 0
  for g in group_ids:
    members = np.flatnonzero(groups == g)
    for o in range(space.max_ops):
      sub = tuple((o,) if (c in members and o < len(cp.ops)) else ()
                  for c, cp in enumerate(space.choice_points))
      per_op[members, o] = max(trace(sub) - empty, 0.0) / len(members)
      done += 1
      if progress is not None:
        progress(done, total)
  return CostModel(float(empty), per_op, space)
