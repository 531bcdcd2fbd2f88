"""A per-op memory cost model: how many bytes a subspace's train step needs,
without compiling it.

Compiling a step and reading XLA's `memory_analysis()` (`radars_jax.memory`)
is exact but takes seconds to minutes per subspace. Sizing the subspace
(how many ops per choice point fit the budget) would compile many candidates,
so instead:

1. *Trace* (no compile): the network with no op at all is traced once with
   `jax.make_jaxpr` on abstract inputs, recording the input shape of every
   mixed op (one per choice point and cell). Then each op alone is traced
   as a mixed op once per distinct input (shape, stride): the bytes of every
   intermediate value plus 4x the parameter bytes (weights, gradients,
   momentum, update), minus those of the empty mixed op, is the op's traced
   cost there; an op's cost at a choice point is the sum over the cells that
   share it. A subspace's traced cost is the empty network's plus the sum of
   its ops'. The traces are of single ops, not of networks, so the model
   costs seconds even for the 23 ops x 28 edges x 8 cells of `darts_large`.
2. *Calibrate*: compiled bytes = intercept + slope * traced bytes, fitted by
   least squares on a few real compiles (two at the start; every subspace
   the search compiles afterwards adds a point).

`largest_k` is the largest number of ops per choice point whose *worst case*
(the k costliest alive ops at every choice point) fits the budget, so every
subspace the controller can draw fits.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import precision
from radars_jax.nas import mixed_ops as mixed_ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib


def _jaxpr_size(jaxpr) -> tuple[int, int]:
  """(bytes of every value an equation produces, equations), sub-jaxprs
  (loop bodies, branches, custom derivatives) included: the memory the
  values need without reuse, and a measure of the program's size."""
  total_bytes = total_eqns = 0
  for eqn in jaxpr.eqns:
    total_eqns += 1
    for var in eqn.outvars:
      aval = getattr(var, "aval", None)
      if aval is not None and hasattr(aval, "shape") and hasattr(aval, "dtype"):
        total_bytes += int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", None)
        inner = inner if inner is not None and hasattr(inner, "eqns") else sub
        if hasattr(inner, "eqns"):
          inner_bytes, inner_eqns = _jaxpr_size(inner)
          total_bytes, total_eqns = total_bytes + inner_bytes, total_eqns + inner_eqns
  return total_bytes, total_eqns


def _param_bytes(params) -> int:
  return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
             for leaf in jax.tree_util.tree_leaves(params))


def traced_cost(space, subspace, supernet_config, num_classes: int, image_shape,
                batch_size: int, intercept=None) -> tuple[int, int]:
  """(bytes, equations) of one forward pass of the supernet of `subspace`
  (per-device batch): the bytes of its values plus 4x its parameter
  bytes, and its jaxpr's equations. Traced, not compiled. `intercept`: a
  `flax.linen.intercept_methods` interceptor for the trace."""
  model = supernet_lib.build_supernet(space, subspace, supernet_config, num_classes)
  return network_cost(model, subspace, image_shape, batch_size, intercept,
                      compute_dtype=supernet_config.get("compute_dtype"))


def network_cost(model: nn.Module, subspace, input_shape, batch_size: int,
                 intercept=None, compute_dtype: str | None = None) -> tuple[int, int]:
  """`traced_cost` of any supernet `model` of `subspace` (applied as
  `model.apply({"params": p}, x, alphas)`, in `compute_dtype`:
  `radars_jax.precision`) on inputs [batch_size, *input_shape]."""
  alphas = tuple(jax.ShapeDtypeStruct((len(a),), jnp.float32) for a in subspace)
  params = supernet_lib.param_shapes(model, input_shape, alphas)
  x = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
  applied = precision.in_dtype(model, compute_dtype)
  forward = lambda p, a, x: applied.apply({"params": p}, x, a)
  with nn.intercept_methods(intercept) if intercept else contextlib.nullcontext():
    jaxpr = jax.make_jaxpr(forward)(params, alphas, x)
  values, eqns = _jaxpr_size(jaxpr.jaxpr)
  return values + 4 * _param_bytes(params), eqns


def traced_bytes(space, subspace, supernet_config, num_classes: int, image_shape,
                 batch_size: int) -> int:
  """The bytes of `traced_cost`."""
  return traced_cost(space, subspace, supernet_config, num_classes, image_shape, batch_size)[0]


# (bytes, equations) of the mixed ops traced so far in this process, by
# `_op_cost_key`: a second search in the process (a notebook's, the next
# method of a comparison) traces none of the ops the first one traced
_TRACED_OP_COSTS: dict[tuple, tuple[int, int]] = {}


def _op_cost_key(mixed_op: nn.Module, input_shape, compute_dtype) -> tuple | None:
  """What a mixed op's traced cost depends on: its class and fields (ops,
  channels, stride, settings), input shape and dtype. None if a field is
  unhashable (then it is traced every time)."""
  fields = tuple((f.name, getattr(mixed_op, f.name)) for f in dataclasses.fields(mixed_op)
                 if f.name not in ("parent", "name"))
  key = (type(mixed_op), fields, tuple(input_shape), compute_dtype)
  try:
    hash(key)
  except TypeError:
    return None
  return key


def mixed_op_cost(mixed_op: mixed_ops_lib.MixedOp, input_shape,
                  compute_dtype: str | None = None) -> tuple[int, int]:
  """(bytes, equations) of one mixed op (`mixed_ops.MixedOp`, weighted) on
  an input of `input_shape`, as `traced_cost` counts them (inside a network
  computing in `compute_dtype`: its input, op weights and parameters cast to
  that dtype, its output left in it). Traced once per process for each
  `_op_cost_key`."""
  key = _op_cost_key(mixed_op, input_shape, compute_dtype)
  if key is not None and key in _TRACED_OP_COSTS:
    return _TRACED_OP_COSTS[key]
  cost = _traced_mixed_op_cost(mixed_op, input_shape, compute_dtype)
  if key is not None:
    _TRACED_OP_COSTS[key] = cost
  return cost


def _traced_mixed_op_cost(mixed_op, input_shape, compute_dtype) -> tuple[int, int]:
  dtype = precision.dtype_of(compute_dtype)
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
  w = jax.ShapeDtypeStruct((len(mixed_op.op_names),), dtype)
  variables = jax.eval_shape(lambda x, w: mixed_op.init(jax.random.key(0), x, w), x, w)
  params = variables.get("params", {})   # (float32: the ops' parameter dtype)
  jaxpr = jax.make_jaxpr(lambda p, x, w: mixed_op.apply(
      {"params": precision.cast_floating(p, dtype)}, x, w))(params, x, w)
  values, eqns = _jaxpr_size(jaxpr.jaxpr)
  return values + 4 * _param_bytes(params), eqns


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
  """bytes(subspace) ~ intercept + slope * (empty + sum of per-op costs), and
  the program's XLA operations ~ ops_per_eqn * (empty_eqns + sum of per-op
  equations).

  per_op: float [num_choice_points, max_ops] traced bytes of each op at each
  choice point; points: (traced, compiled) pairs of real compiles; space:
  to drop dead ops (`live_ops`); per_op_eqns, empty_eqns: the same for the
  traced equations; ops_points: (traced equations, XLA operations) pairs of
  real programs (`dnas.program_ops`)."""
  empty: float
  per_op: np.ndarray
  space: Any = None
  points: list = dataclasses.field(default_factory=list)
  slope: float = 1.0
  intercept: float = 0.0
  empty_eqns: float = 0.0
  per_op_eqns: np.ndarray | None = None
  ops_points: list = dataclasses.field(default_factory=list)

  def _live(self, mask) -> np.ndarray:
    mask = np.asarray(mask, bool)
    return mask if self.space is None else live_ops(self.space, mask)

  def traced(self, mask) -> float:
    return float(self.empty + np.sum(np.where(self._live(mask), self.per_op, 0.0)))

  def estimate(self, mask) -> float:
    """Estimated compiled bytes of the step of the subspace `mask`
    (bool [num_choice_points, max_ops])."""
    return self.intercept + self.slope * self.traced(mask)

  def traced_eqns(self, mask) -> float:
    if self.per_op_eqns is None:
      return 0.0
    return float(self.empty_eqns + np.sum(np.where(self._live(mask), self.per_op_eqns, 0.0)))

  def program_ops(self, mask) -> float | None:
    """Estimated XLA operations of the train step of `mask`: a line
    through the origin fitted to the real programs so far; None before the
    first (or without traced equations)."""
    points = [(x, y) for x, y in self.ops_points if x > 0 and y > 0]
    if not points or self.per_op_eqns is None:
      return None
    x, y = np.array(points, float).T
    return float(np.sum(x * y) / np.sum(x * x)) * self.traced_eqns(mask)

  def add_point(self, mask, compiled: float, ops: int = 0) -> None:
    """Record a real compile (its bytes and, when known, its XLA
    operations) and refit."""
    if ops > 0 and self.per_op_eqns is not None:
      self.ops_points.append((self.traced_eqns(mask), int(ops)))
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

  def largest_k(self, alive, budget: float, fits=None) -> int:
    """The largest k whose worst case fits `budget` (0 if not even k = 1),
    and `fits` (an optional predicate of the worst case's mask) for k > 1."""
    alive = np.asarray(alive, bool)
    best = 0
    for k in range(1, int(alive.sum(-1).max()) + 1):
      mask = self.worst_case(alive, k)
      if self.estimate(mask) <= budget and (fits is None or k == 1 or fits(mask)):
        best = k
      else:
        break
    return best

  def to_json(self) -> dict:
    """Everything but the space (JSON)."""
    return {"empty": self.empty, "per_op": self.per_op.tolist(), "points": self.points,
            "slope": self.slope, "intercept": self.intercept, "empty_eqns": self.empty_eqns,
            "per_op_eqns": None if self.per_op_eqns is None else self.per_op_eqns.tolist(),
            "ops_points": self.ops_points}

  @classmethod
  def from_json(cls, d: dict, space=None) -> "CostModel":
    eqns = d.get("per_op_eqns")   # (absent in searches checkpointed without them)
    return cls(float(d["empty"]), np.asarray(d["per_op"], float), space,
               [tuple(p) for p in d["points"]], float(d["slope"]), float(d["intercept"]),
               float(d.get("empty_eqns", 0.0)), None if eqns is None else np.asarray(eqns, float),
               [tuple(p) for p in d.get("ops_points", [])])


def trace_cost_model(space, supernet_config, num_classes: int, image_shape,
                     batch_size: int, progress: Any = None) -> CostModel:
  """The cost model of the image supernets (`nas.supernet.build_supernet`;
  traced per edge as `mixed_ops.MixedOp`s, whatever `supernet.scan_edges`
  says, so that every mixed op's input is seen): `trace_network_cost_model`.
  `progress`: optional callable(done, total)."""
  per_edge = per_edge_config(supernet_config)
  return trace_network_cost_model(
      space, lambda subspace: supernet_lib.build_supernet(space, subspace, per_edge, num_classes),
      image_shape, batch_size, progress, compute_dtype=supernet_config.get("compute_dtype"))


def per_edge_config(supernet_config):
  """A copy of `supernet_config` whose cells compute edge by edge (one
  `MixedOp` each, which the cost models trace), not scanned."""
  per_edge = supernet_config.copy_and_resolve_references() if hasattr(
      supernet_config, "copy_and_resolve_references") else dict(supernet_config)
  if "scan_edges" in per_edge:
    per_edge["scan_edges"] = False
  return per_edge


def mixed_op_inputs(space, probe: nn.Module, trace) -> tuple[Any, list, dict]:
  """What `trace(record)` (a trace of `probe`, a supernet of no op, with
  `record` as its `flax.linen.intercept_methods` interceptor) returns, the
  mixed ops it met per choice point `[(mixed op, input shape), ...]`, and
  the distinct places of each op of the space `{(op name, stride,
  channels, input shape): a mixed op there}`. (A choice point the network
  never uses, e.g. the normal cell's in a one-cell DARTS network whose only
  cell reduces, has none.)"""
  inputs: list[list] = [[] for _ in space.choice_points]

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, mixed_ops_lib.MixedOp) and context.method_name == "__call__":
      c = supernet_lib.choice_point_of(probe, space, module.path)
      inputs[c].append((module, tuple(args[0].shape)))
    return next_fun(*args, **kwargs)

  result = trace(record)
  contexts = {}
  for c, cp in enumerate(space.choice_points):
    for module, shape in inputs[c]:
      for name in cp.ops:
        contexts.setdefault((name, module.stride, module.channels, shape), module)
  return result, inputs, contexts


def trace_network_cost_model(space, build, input_shape, batch_size: int,
                             progress: Any = None, compute_dtype: str | None = None) -> CostModel:
  """Per-op traced costs of the supernets `build(subspace)` makes (their
  mixed ops per edge; applied as `network_cost` says, in `compute_dtype`)
  on inputs [batch_size, *input_shape]: one trace of the empty network, so
  that every mixed op's input is seen, then one trace of each op alone per
  distinct mixed-op input. `progress`: optional callable(done, total)."""
  empty_subspace = tuple(() for _ in space.choice_points)
  probe = build(empty_subspace)
  (empty, empty_eqns), inputs, contexts = mixed_op_inputs(
      space, probe, lambda record: network_cost(probe, empty_subspace, input_shape,
                                                batch_size, intercept=record,
                                                compute_dtype=compute_dtype))
  done, total = 0, len(contexts)
  costs, without_op = {}, {}   # -> (bytes, equations) of the op; of no op
  for key, module in contexts.items():
    name, stride, channels, shape = key
    alone = mixed_op_cost(module.clone(parent=None, name=None, op_names=(name,)), shape,
                          compute_dtype)
    if (stride, channels, shape) not in without_op:
      without_op[(stride, channels, shape)] = mixed_op_cost(
          module.clone(parent=None, name=None, op_names=()), shape, compute_dtype)
    costs[key] = tuple(max(a - b, 0) for a, b in zip(alone, without_op[(stride, channels, shape)]))
    done += 1
    if progress is not None:
      progress(done, total)
  per_op = np.zeros((2, space.num_choice_points, space.max_ops))
  for c, cp in enumerate(space.choice_points):
    for o, name in enumerate(cp.ops):
      for m, shape in inputs[c]:
        per_op[:, c, o] += costs[(name, m.stride, m.channels, shape)]
  return CostModel(float(empty), per_op[0], space, empty_eqns=float(empty_eqns),
                   per_op_eqns=per_op[1])
