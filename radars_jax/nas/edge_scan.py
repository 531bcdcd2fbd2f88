"""A search cell's edges run by one `lax.scan` (`scanned_dag`).

With `supernet.scan_edges`, a cell whose edges all hold the same ops (the
full space) runs them in one scan: the same numbers as one `MixedOp` per
edge, one compiled mixed op per scan instead of one per edge, and each op's
weights stored stacked over the scanned edges (`weight_pool.canonical` maps
them to the per-edge paths; the full DARTS step has 147 weight arrays
instead of 1,399 and compiles several times faster on CPU). Each scanned
mixed op is recomputed in the backward pass, keeping only its input: the
same numbers with several times fewer bytes, and no slower
(`OpSettings.remat`, docs/performance.md).

With `supernet.scan_switched`, the edges of a switched cell run in a scan
the same way (the numbers of one `SwitchedMixedOp` per edge; weights
declared per edge, as there), with a gradient of its own that keeps only
the states the edges read (`_switched_scan`).

`scannable` says which cells a scan can compute; the cells
(`radars_jax.nas.cells`) run their edges scanned where it says they can.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from radars_jax.nas import ops as ops_lib
from radars_jax.nas import weight_pool
from radars_jax.nas.mixed_ops import (SwitchedEdgeParams, accumulate, slot_weight,
                                      switched_branch, switched_mixed_fn, switched_ops)
from radars_jax.nas.ops import OpSettings


def _scan_runs(edges, strides, n_in: int) -> list[list[int]] | None:
  """The edges of a cell in the runs `scanned_dag` scans (each in target
  order): all of them where every stride is 1, else those leaving the
  inputs, then those between nodes. None where the strides do not allow
  it (one stride on the edges leaving the inputs, 1 between nodes)."""
  by_target = sorted(range(len(edges)), key=lambda e: edges[e][1])   # stable
  if set(strides) == {1}:
    return [by_target]
  from_inputs = [e for e in by_target if edges[e][0] < n_in]
  from_nodes = [e for e in by_target if edges[e][0] >= n_in]
  if (len({strides[e] for e in from_inputs}) != 1 or
      any(strides[e] != 1 for e in from_nodes)):
    return None
  return [from_inputs] + ([from_nodes] if from_nodes else [])


def scannable(edges, edge_ops, strides, settings: OpSettings, slot_orders=None) -> bool:
  """Whether `scanned_dag` can compute a cell: every edge holds the same
  ops; static, each of them weightless (`is_shared`) or with a stacked
  form; switched (`slot_orders` given: per edge its ops' order, or None),
  the same order on the edges of each scan."""
  ops = edge_ops[0]
  n_in = min(dst for _, dst in edges)
  runs = _scan_runs(edges, strides, n_in)
  if runs is None or not all(o == ops for o in edge_ops):
    return False
  if slot_orders is not None:
    return all(len({slot_orders[e] for e in run}) == 1 for run in runs)
  return ops_lib.stackable(settings) and all(
      ops_lib.has_functional_form(name, s) for name in ops for s in set(strides))


def _mixed_op_fn(op_names, stride: int, settings: OpSettings):
  """One edge's mixed op as a pure function of (its weights, its mixing
  weights or None, its input): the numbers of `MixedOp`. The ops with
  weights share one ReLU of the input."""
  def run(params, weights, x):
    out, rx = None, None
    for i, name in enumerate(op_names):
      if name == "none":
        continue
      if ops_lib.is_shared(name, stride):
        y = ops_lib.shared_op(name, x, stride, settings)
      else:
        rx = ops_lib.relu(x) if rx is None else rx
        y = ops_lib.functional_op_of_relu(name, params[name], rx, stride, settings)
      if weights is not None:
        y = weights[i].astype(y.dtype) * y
      out = accumulate(out, y)
    return jnp.zeros_like(x[:, ::stride, ::stride, :]) if out is None else out
  return run


def _dag_scan_step(mixed):
  """The step of a `scanned_dag` scan: edge `xs` adds `mixed(xs, x)` of the
  state x it reads (from `sources`, or from the stack itself if None) to
  its target in the stack."""
  def body(carry, xs):
    stack, sources = carry
    x = jax.lax.dynamic_index_in_dim(stack if sources is None else sources, xs["src"],
                                     keepdims=False)
    return (_add_at(stack, xs["dst"], mixed(xs, x)), sources), None
  return body


def _add_at(stack, index, value):
  """`stack` with `value` added to its entry `index` (a traced int)."""
  total = jax.lax.dynamic_index_in_dim(stack, index, keepdims=False) + value
  return jax.lax.dynamic_update_index_in_dim(stack, total, index, 0)


@functools.lru_cache(maxsize=None)
def _scan_body(op_names, stride: int, settings: OpSettings):
  """The step of `scanned_dag`'s scans of static edges. One function
  object per kind of edge, so that JAX traces (and differentiates) the
  body once for every scan of that kind and shape (the cells of a stage,
  the two passes of a bi-level step), not once per scan."""
  mixed = _mixed_op_fn(op_names, stride, settings)
  if settings.remat:
    # keep the edge's input only (inside a scan CSE cannot undo the remat):
    # several times fewer bytes, same numbers, no slower (docs/performance.md;
    # per edge, outside a scan, recomputing saved nothing)
    mixed = jax.checkpoint(mixed, prevent_cse=False)
  return _dag_scan_step(lambda xs, x: mixed(xs["params"], xs.get("weights"), x))


def _branch_vjp(branch, i):
  """Op `i` of a switched choice point (`branch`: `switched_branch`) with
  its pullback: `(x, params, g) -> (op(x), d/dx, d/dparams of g . op(x))`."""
  def run(x, params, g):
    y, pullback = jax.vjp(branch(i), x, params)
    return (y, *pullback(g))
  return run


def _switched_edge_grads(ops, order, branch, stride: int, xs, x, g):
  """One switched edge's gradients, its op recomputed from its input `x`
  (`xs`: the edge's slots, mixing weights and weights; `g`: its output's
  gradient): (d/dx, d/dparams per op, d/dmixing weights). Op by op in the
  slots' order, a two-way `lax.switch` per op, as `switched_mixed_fn`."""
  slots, weights, params = xs["slots"], xs["weights"], xs["params"]
  dx, dweights = None, jnp.zeros_like(weights)
  dparams = [jax.tree_util.tree_map(jnp.zeros_like, p) for p in params]
  for o in order:
    if ops[o] is None:
      continue
    taken, weight = slot_weight(slots, weights, o)
    y, dx_o, dparams[o] = jax.lax.switch(
        taken, [_branch_vjp(branch, None), _branch_vjp(branch, o)], x, params[o],
        weight.astype(g.dtype) * g)
    dweights = dweights + jnp.where(slots == o, jnp.sum(g * y), 0.0).astype(weights.dtype)
    dx = accumulate(dx, dx_o)
  dx = jnp.zeros_like(x[:, ::stride, ::stride, :]) if dx is None else dx
  return dx, dparams, dweights


def _switched_backward_step(ops, order, stride: int, train: bool):
  """The step of the reverse scan that differentiates `_switched_scan`:
  carry (the stack's gradient, the sources' gradient or None, the states
  the edges read); edge `xs` reads its input and its target's gradient,
  adds its input's gradient to its source's and emits its weights' and
  mixing weights' gradients."""
  branch = switched_branch(ops, stride, None, train)  # (edges keep their channels)

  def body(carry, xs):
    g_stack, g_sources, read = carry
    x = jax.lax.dynamic_index_in_dim(read, xs["src"], keepdims=False)
    g = jax.lax.dynamic_index_in_dim(g_stack, xs["dst"], keepdims=False)
    dx, dparams, dweights = _switched_edge_grads(ops, order, branch, stride, xs, x, g)
    if g_sources is None:
      g_stack = _add_at(g_stack, xs["src"], dx)
    else:
      g_sources = _add_at(g_sources, xs["src"], dx)
    return (g_stack, g_sources, read), (dparams, dweights)

  return body


def _xs_cotangents(xs, dparams, dweights) -> dict:
  """The gradient of a switched scan's per-edge inputs `xs`: its weights'
  and mixing weights'; None for the integer ones (sources, targets,
  slots)."""
  return {name: (dparams if name == "params" else dweights if name == "weights" else None)
          for name in xs}


def _recomputing_scan(forward_body, backward_body):
  """`run(stack, sources, xs)`: the scan of `forward_body` over the edges
  `xs` (carry: the stack and `sources`, or None to read the stack itself),
  returning the stack; its gradient is the reverse scan of
  `backward_body` (`_switched_backward_step`), which keeps only the states
  the edges read: the final stack, or `sources`."""
  def scan(stack, sources, xs):
    return jax.lax.scan(forward_body, (stack, sources), xs)[0][0]

  @jax.custom_vjp
  def run_on_stack(stack, xs):
    return scan(stack, None, xs)

  def forward_on_stack(stack, xs):
    out = scan(stack, None, xs)
    return out, (out, xs)

  def backward_on_stack(residuals, g_out):
    read, xs = residuals
    (g_stack, _, _), (dparams, dweights) = jax.lax.scan(
        backward_body, (g_out, None, read), xs, reverse=True)
    return g_stack, _xs_cotangents(xs, dparams, dweights)

  @jax.custom_vjp
  def run_from_sources(stack, sources, xs):
    return scan(stack, sources, xs)

  def forward_from_sources(stack, sources, xs):
    return scan(stack, sources, xs), (sources, xs)

  def backward_from_sources(residuals, g_out):
    read, xs = residuals
    (g_stack, g_sources, _), (dparams, dweights) = jax.lax.scan(
        backward_body, (g_out, jnp.zeros_like(read), read), xs, reverse=True)
    return g_stack, g_sources, _xs_cotangents(xs, dparams, dweights)

  run_on_stack.defvjp(forward_on_stack, backward_on_stack)
  run_from_sources.defvjp(forward_from_sources, backward_from_sources)
  return lambda stack, sources, xs: (run_on_stack(stack, xs) if sources is None
                                     else run_from_sources(stack, sources, xs))


@functools.lru_cache(maxsize=None)
def _switched_scan(op_names, channels: int, stride: int, settings: OpSettings, order,
                   train: bool):
  """`scanned_dag`'s scan of switched edges: `run(stack, sources, xs)`
  adds, edge by edge (in target order), the switched mixed op
  (`switched_mixed_fn`) of the state it reads (from `sources`, or from
  `stack` itself if None) to its target in `stack`, and returns the stack.

  Its gradient keeps only the states the edges read (the final stack, or
  `sources`): a reverse scan over the edges reads each edge's input from
  them, recomputes each op a slot holds and takes its gradient (a two-way
  `lax.switch` per op, as `switched_mixed_fn`), and adds the input's
  gradient to that of its source (`_switched_backward_step`). Every source
  is complete before an edge reads it, so reading the final states is
  exact, and in reverse order a target's gradient is complete before its
  edges are visited. (Differentiating the scan instead kept a copy of
  every edge's input: more bytes than per edge; docs/performance.md.) One
  function object per kind of edge (see `_scan_body`); differentiable
  twice."""
  ops = switched_ops(op_names, channels, stride, settings)
  order = order or tuple(range(len(ops)))
  mixed = switched_mixed_fn(op_names, channels, stride, settings, order, train)
  forward_body = _dag_scan_step(
      lambda xs, x: mixed(xs["params"], xs["weights"], xs["slots"], x))
  return _recomputing_scan(forward_body, _switched_backward_step(ops, order, stride, train))


def scanned_dag(states: list, edges, edge_ops, edge_weights, channels: int, strides,
                settings: OpSettings, train: bool = True, edge_slots=None,
                slot_orders=None) -> list:
  """The nodes of a search cell (node t = the sum over edges (s, t) of the
  mixed op of edge (s, t) on state s), the edges run by `lax.scan`: one
  compiled mixed op per scan instead of one per edge.

  Needs `scannable` edges (the full space; a subspace whose edges differ
  runs per edge). With stride 1 everywhere (normal cells) one scan runs
  every edge, target by target, its carry the stacked states (inputs and
  nodes); otherwise (reduction cells) one scan runs the edges leaving the
  inputs (stride 2) into the stacked nodes, then one the edges between
  nodes (stride 1). Per step the scan takes the edge's source, target,
  weights and mixing weights. The numbers of one `MixedOp` per edge; the
  weights of a scan's edges are stored stacked, in its order, under
  `weight_pool.stacked_edges_name` of them (`weight_pool.canonical` gives
  the per-edge paths and shapes).

  Switched (`edge_slots` given, with `slot_orders`: per edge, or None):
  the numbers of one `SwitchedMixedOp` per edge; each edge's weights are
  declared under its own path, as there (`SwitchedEdgeParams`), and
  stacked for the scan, which also takes each edge's slots."""
  n_in = len(states)
  targets = sorted({dst for _, dst in edges})
  runs = _scan_runs(edges, strides, n_in)
  switched = edge_slots is not None
  orders = slot_orders or (None,) * len(edges)

  def scan(carry, run, index, sources=None):
    """Adds the mixed op of every edge of `run` to its target in `carry`,
    reading each source from `sources` (None: from `carry`); `index` maps a
    state number to its position in the stack it is read from or added to."""
    stride, op_names = strides[run[0]], edge_ops[run[0]]
    xs = {"src": jnp.asarray([index(edges[e][0]) for e in run], jnp.int32),
          "dst": jnp.asarray([index(edges[e][1]) for e in run], jnp.int32)}
    if edge_weights is not None:
      xs["weights"] = jnp.stack([edge_weights[e] for e in run])
    if switched:
      like = (carry if sources is None else sources)[0]   # an input's shape
      per_edge = [SwitchedEdgeParams(op_names, channels, stride, settings,
                                     name=f"edge_{edges[e][0]}_{edges[e][1]}")(like, train)
                  for e in run]
      xs["params"] = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *per_edge)
      xs["slots"] = jnp.stack([edge_slots[e] for e in run])
      return _switched_scan(op_names, channels, stride, settings, orders[run[0]], train)(
          carry, sources, xs)
    # (scannable: every op is weightless or has a stacked form)
    schema = {name: ops_lib.param_schema(name, channels, stride) for name in op_names
              if name != "none" and not ops_lib.is_shared(name, stride)}
    xs["params"] = ops_lib.Params(
        schema, len(run), name=weight_pool.stacked_edges_name([edges[e] for e in run]))()
    return jax.lax.scan(_scan_body(op_names, stride, settings), (carry, sources), xs)[0][0]

  x0 = states[0]
  if set(strides) == {1}:
    carry = jnp.stack(list(states) + [jnp.zeros_like(x0)] * len(targets))
    carry = scan(carry, runs[0], lambda s: s)
    return [carry[i] for i in range(carry.shape[0])]
  from_inputs, *from_nodes = runs
  stride = strides[from_inputs[0]]
  nodes = jnp.zeros((len(targets), *x0[:, ::stride, ::stride, :].shape), x0.dtype)
  nodes = scan(nodes, from_inputs, lambda s: s if s < n_in else targets.index(s),
               jnp.stack(states))
  if from_nodes:
    nodes = scan(nodes, from_nodes[0], targets.index)
  return list(states) + [nodes[i] for i in range(len(targets))]
