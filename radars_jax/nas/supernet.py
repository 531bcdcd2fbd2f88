"""The search supernet: Flax modules built from a (static) subspace.

A `MixedOp` holds only the ops active at its choice point, so XLA never sees
an inactive op and memory scales with the subspace, not the space. Its output
is the sum over active ops of softmax(alpha)_i * op_i(x); with `alphas=None`
it is the plain sum, which for one op per edge (`spaces.genotype_subspace`)
is exactly the derived discrete network, evaluated with inherited weights.
`none` ops contribute zero and are never computed (their alpha still counts
in the softmax).

Parameter paths name the cell, the edge and the op
(`cell_3/edge_1_4/sep_conv_3x3/...`), so the same op on the same edge has
the same path in every subspace: that is what `weight_pool` keys on.

A *switched* supernet (`build_supernet(..., switched=True)`) holds every op
of the space and takes the active ops as data: `slots`, int [choice points,
k], names the op in each of a choice point's k slots (-1: empty slot), and
`SwitchedMixedOp` runs each slot's op through `lax.switch`. One compiled
program then serves every subspace of at most k ops per choice point (the
RADARS loop compiles once per k, not once per sample) and computes the same
numbers as the static supernet of that subspace. Its backward pass
recomputes each slot's op from the choice point's input
(`recomputed_switch`), and its ops' convolutions take gradients XLA runs
fast inside a switch (`radars_jax.nas.conv`). Against the costliest static
subspace of k ops it needs fewer bytes (experiments/shared_programs.py,
docs/performance.md); the loop still checks its compiled bytes against the
budget like any step's.

With `scan_edges`, a cell whose edges all hold the same ops (the full
space) runs them in one `lax.scan` (`scanned_dag`): the same numbers, one
compiled mixed op per scan instead of one per edge, and each op's weights
stored stacked over the scanned edges (`weight_pool.canonical` maps them
to the per-edge paths; the full DARTS step has 147 weight arrays instead
of 1,399 and compiles several times faster on CPU).

Networks:
- `DartsSupernet`: the DARTS search network (stem multiplier 3, `layers`
  cells, reductions at 1/3 and 2/3 of the depth, 4 nodes per cell).
- `NB201Supernet`: the NAS-Bench-201 skeleton (3 stages of
  `cells_per_stage` cells with residual reduction blocks between them).
"""
from __future__ import annotations

import dataclasses
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
from radars_jax.nas.ops import BatchNorm, FactorizedReduce, OpSettings, ReLUConvBN

Alphas = Sequence[jax.Array]   # one [n_active] vector per choice point


Slots = jax.Array   # int32 [num_choice_points, k]: op index per slot, -1 = empty


def mixing_weights(alphas, op_scales, slots=None):
  """Per choice point, the factors of the active ops: softmax(alpha), or
  `op_scales` as given (the derived network scaled as the supernet saw its
  ops), or None (plain sum). With `slots`, alphas and scales have one entry
  per slot: empty slots get weight 0 and no share of the softmax."""
  if slots is None:
    if op_scales is not None:
      return list(op_scales)
    return None if alphas is None else [jax.nn.softmax(a) for a in alphas]
  valid = slots >= 0
  if op_scales is not None:
    return [jnp.where(valid[c], w, 0.0) for c, w in enumerate(op_scales)]
  if alphas is None:
    return [valid[c].astype(jnp.float32) for c in range(valid.shape[0])]
  # (an all-empty choice point gets a uniform softmax, then weight 0)
  return [jnp.where(valid[c], jax.nn.softmax(jnp.where(valid[c], a, -1e30)), 0.0)
          for c, a in enumerate(alphas)]


def reduction_cells(layers: int) -> tuple[int, int]:
  """The DARTS network's reduction cells: at 1/3 and 2/3 of the depth."""
  return layers // 3, 2 * layers // 3


class MixedOp(nn.Module):
  """One choice point: the weighted sum of its active ops."""
  op_names: tuple[str, ...]
  channels: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, weights=None, train: bool = True):
    out = None
    for i, name in enumerate(self.op_names):
      if name == "none":
        continue
      y = ops_lib.make_op(name, self.channels, self.stride, self.settings)(x, train)
      if weights is not None:
        y = weights[i].astype(y.dtype) * y
      out = y if out is None else out + y
    if out is None:
      out = jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])
    return out


def recomputed_switch(index, branches, x, params):
  """`lax.switch(index, branches, x, params)` whose gradient keeps only the
  inputs and recomputes the picked branch in the backward pass.

  Differentiating `lax.switch` directly makes every branch return the
  residuals of all branches (zeros for the ones not taken), so a switch
  over n ops keeps n ops' worth of activations for the backward pass; here
  it keeps x (shared by every slot of the choice point) and the weights,
  for one more forward pass of the op: fewer bytes than the costliest
  static subspace of k ops (docs/performance.md). Differentiable twice
  (DARTS second order; tests/test_switched.py)."""

  @jax.custom_vjp
  def run(index, x, params):
    return jax.lax.switch(index, branches, x, params)

  def forward(index, x, params):
    return run(index, x, params), (index, x, params)

  def backward(residuals, g):
    index, x, params = residuals
    def grad_of(branch):
      return lambda x, params, g: jax.vjp(branch, x, params)[1](g)
    dx, dparams = jax.lax.switch(index, [grad_of(b) for b in branches], x, params, g)
    return None, dx, dparams

  run.defvjp(forward, backward)
  return run(index, x, params)


def _switched_ops(op_names, channels: int, stride: int, settings: OpSettings) -> list:
  """Every op of a switched choice point as a standalone module (None for
  `none`), built `switch_friendly` (`radars_jax.nas.conv`)."""
  settings = dataclasses.replace(settings, switch_friendly=True)
  return [None if name == "none" else
          ops_lib.make_op(name, channels, stride, settings, unbound=True)
          for name in op_names]


def _declare_switched_params(module: nn.Module, op_names, ops, x, train: bool) -> list:
  """Declares, in `module`, the weights of every op of a switched choice
  point (input like `x`) under the paths `MixedOp` uses; returns them, one
  entry per op ({} for weightless ops)."""
  params = []
  for name, op in zip(op_names, ops):
    if op is not None and module.is_initializing() and jax.eval_shape(
        lambda x, op=op: op.init(jax.random.key(0), x, train), x).get("params"):
      module.param(name, lambda rng, op=op: op.init(rng, x, train)["params"])
    params.append(module.get_variable("params", name, {}))   # weightless ops: {}
  return params


def _slot_weight(slots, weights, op: int):
  """(whether any slot holds `op` as int32 0/1, the mixing weight of the
  slot that holds it or 0): `op`'s share of a switched choice point."""
  hit = slots == op
  return jnp.any(hit).astype(jnp.int32), jnp.sum(jnp.where(hit, weights, 0.0))


def _switched_branch(ops, stride: int, train: bool):
  """`branch(i)`: op i of a switched choice point as `(x, its weights) ->
  output`; zeros for an absent op (i None) or `none`."""
  def branch(i):
    if i is None or ops[i] is None:
      return lambda x, params: jnp.zeros_like(x[:, ::stride, ::stride, :])
    return lambda x, params: ops[i].apply({"params": params}, x, train)
  return branch


@functools.lru_cache(maxsize=None)
def _switched_mixed_fn(op_names, channels: int, stride: int, settings: OpSettings,
                       order: tuple[int, ...] | None, train: bool):
  """A switched choice point as a pure function of (its ops' weights, its
  mixing weights [k], its slots [k], its input): the sum over slots s of
  weights[s] * op[slots[s]](x).

  Computed op by op, not slot by slot: every op of the choice point is one
  two-way `lax.switch` (`recomputed_switch`) between the op and zeros,
  taken where a slot holds it. So the program holds each op once, whatever
  the number of slots: its size does not grow with k (the program of each
  k differs only in the slots' width). The ops are visited in `order`
  (the slots' order, `subspace_slots`), so the sum adds the same terms in
  the same order as slot by slot (plus exact zeros). One function object per kind of
  choice point (see `_scan_body`)."""
  ops = _switched_ops(op_names, channels, stride, settings)
  branch = _switched_branch(ops, stride, train)
  order = order or tuple(range(len(ops)))

  def weighted(i):
    """(x, (op i's weights, its mixing weight)) -> the weighted output: the
    weight is multiplied inside the switch, so that the backward pass
    recomputes the output it needs instead of keeping every op's."""
    return lambda x, pw: pw[1].astype(x.dtype) * branch(i)(x, pw[0])

  def run(params, weights, slots, x):
    out = None
    for o in order:
      if ops[o] is None:   # `none` adds nothing
        continue
      taken, weight = _slot_weight(slots, weights, o)
      out = _add(out, recomputed_switch(taken, [weighted(None), weighted(o)], x,
                                        (params[o], weight)))
    return branch(None)(x, params) if out is None else out

  return run


class SwitchedMixedOp(nn.Module):
  """One choice point of a switched supernet: declares the weights of every
  op of the choice point (under the paths `MixedOp` uses) and sums, over
  the k slots, weight[s] * op[slots[s]](x): each op runs where a slot
  holds it (`lax.switch` at run time; an empty slot or `none` adds
  nothing; `_switched_mixed_fn`).

  `order` ranks the ops, costliest first; slots hold a subspace's ops in
  that order (`subspace_slots`) and the ops are summed in it. The ops are
  built `switch_friendly` (`radars_jax.nas.conv`)."""
  op_names: tuple[str, ...]   # every op of the choice point
  channels: int
  stride: int
  settings: OpSettings
  order: tuple[int, ...] | None = None   # None: as listed

  @nn.compact
  def __call__(self, x, weights, slots, train: bool = True):
    ops = _switched_ops(self.op_names, self.channels, self.stride, self.settings)
    params = _declare_switched_params(self, self.op_names, ops, x, train)
    mixed = _switched_mixed_fn(self.op_names, self.channels, self.stride, self.settings,
                               self.order, train)
    return mixed(params, weights, slots, x)


class SwitchedEdgeParams(nn.Module):
  """The weights of one switched choice point, declared as `SwitchedMixedOp`
  declares them (same paths) but not applied: `scanned_dag` stacks those
  of its edges and runs `_switched_mixed_fn` in a scan. `x`: an input of
  the edge's shape (only its shape is read, at initialisation)."""
  op_names: tuple[str, ...]
  channels: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True) -> list:
    ops = _switched_ops(self.op_names, self.channels, self.stride, self.settings)
    return _declare_switched_params(self, self.op_names, ops, x, train)


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
  weights share one ReLU of the input, and every op's output is weighted
  before it is squeezed, so a scan keeps each activation once."""
  def run(params, weights, x):
    out, rx = None, None
    for i, name in enumerate(op_names):
      if name == "none":
        continue
      if ops_lib.is_shared(name, stride):
        y = ops_lib.shared_op(name, x, stride, settings)[None]
      else:
        rx = ops_lib.relu(x[None]) if rx is None else rx
        p = jax.tree_util.tree_map(lambda a: a[None], params[name])
        y = ops_lib.stacked_op_of_relu(name, p, rx, stride, settings)
      if weights is not None:
        y = weights[i].astype(y.dtype) * y
      out = _add(out, y)
    return jnp.zeros_like(x[:, ::stride, ::stride, :]) if out is None else out[0]
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
    # keep the edge's input only (inside a scan CSE cannot undo the remat)
    mixed = jax.checkpoint(mixed, prevent_cse=False)
  return _dag_scan_step(lambda xs, x: mixed(xs["params"], xs.get("weights"), x))


@functools.lru_cache(maxsize=None)
def _switched_scan(op_names, channels: int, stride: int, settings: OpSettings, order,
                   train: bool):
  """`scanned_dag`'s scan of switched edges: `run(stack, sources, xs)`
  adds, edge by edge (in target order), the switched mixed op
  (`_switched_mixed_fn`) of the state it reads (from `sources`, or from
  `stack` itself if None) to its target in `stack`, and returns the stack.

  Its gradient keeps only the states the edges read (the final stack, or
  `sources`): a reverse scan over the edges reads each edge's input from
  them, recomputes each op a slot holds and takes its gradient (a two-way
  `lax.switch` per op, as `_switched_mixed_fn`), and adds
  the input's gradient to that of its source. Every source is complete
  before an edge reads it, so reading the final states is exact, and in
  reverse order a target's gradient is complete before its edges are
  visited. (Differentiating the scan instead kept a copy of every edge's
  input: more bytes than per edge; docs/performance.md.) One
  function object per kind of edge (see `_scan_body`); differentiable
  twice."""
  ops = _switched_ops(op_names, channels, stride, settings)
  order = order or tuple(range(len(ops)))
  mixed = _switched_mixed_fn(op_names, channels, stride, settings, order, train)

  branch = _switched_branch(ops, stride, train)

  def branch_vjp(i):
    """(x, params, g) -> (op(x), d/dx, d/dparams) of `g` . op(x)."""
    def run(x, params, g):
      y, pullback = jax.vjp(branch(i), x, params)
      return (y, *pullback(g))
    return run

  forward_body = _dag_scan_step(
      lambda xs, x: mixed(xs["params"], xs["weights"], xs["slots"], x))

  def scan(stack, sources, xs):
    return jax.lax.scan(forward_body, (stack, sources), xs)[0][0]

  def backward_body(carry, xs):
    g_stack, g_sources, read = carry
    x = jax.lax.dynamic_index_in_dim(read, xs["src"], keepdims=False)
    g = jax.lax.dynamic_index_in_dim(g_stack, xs["dst"], keepdims=False)
    slots, weights, params = xs["slots"], xs["weights"], xs["params"]
    dx, dweights = None, jnp.zeros_like(weights)
    dparams = [jax.tree_util.tree_map(jnp.zeros_like, p) for p in params]
    for o in order:   # as `_switched_mixed_fn`: op by op, in the slots' order
      if ops[o] is None:
        continue
      taken, weight = _slot_weight(slots, weights, o)
      y, dx_o, dparams[o] = jax.lax.switch(
          taken, [branch_vjp(None), branch_vjp(o)], x, params[o], weight.astype(g.dtype) * g)
      dweights = dweights + jnp.where(slots == o, jnp.sum(g * y), 0.0).astype(weights.dtype)
      dx = _add(dx, dx_o)
    dx = jnp.zeros_like(x[:, ::stride, ::stride, :]) if dx is None else dx
    if g_sources is None:
      g_stack = _add_at(g_stack, xs["src"], dx)
    else:
      g_sources = _add_at(g_sources, xs["src"], dx)
    return (g_stack, g_sources, read), (dparams, dweights)

  def cotangents(xs, dparams, dweights):
    return {name: (dparams if name == "params" else dweights if name == "weights" else None)
            for name in xs}

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
    return g_stack, cotangents(xs, dparams, dweights)

  @jax.custom_vjp
  def run_from_sources(stack, sources, xs):
    return scan(stack, sources, xs)

  def forward_from_sources(stack, sources, xs):
    return scan(stack, sources, xs), (sources, xs)

  def backward_from_sources(residuals, g_out):
    read, xs = residuals
    (g_stack, g_sources, _), (dparams, dweights) = jax.lax.scan(
        backward_body, (g_out, jnp.zeros_like(read), read), xs, reverse=True)
    return g_stack, g_sources, cotangents(xs, dparams, dweights)

  run_on_stack.defvjp(forward_on_stack, backward_on_stack)
  run_from_sources.defvjp(forward_from_sources, backward_from_sources)
  return lambda stack, sources, xs: (run_on_stack(stack, xs) if sources is None
                                     else run_from_sources(stack, sources, xs))


def scanned_dag(states: list, edges, edge_ops, edge_weights, channels: int, strides,
                settings: OpSettings, train: bool = True, edge_slots=None,
                slot_orders=None) -> list:
  """The nodes of a search cell (as `mixed_dag`), the edges run by
  `lax.scan`: one compiled mixed op per scan instead of one per edge.

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


def _add(total, y):
  return y if total is None else total + y


def _edge(switched: bool, op_names, channels, stride, settings, name, x, edge_weights,
          edge_slots, e: int, train: bool, slot_orders=None):
  """Edge `e`'s mixed op on `x` (static or switched; called inside a cell)."""
  weights = None if edge_weights is None else edge_weights[e]
  if switched:
    order = None if slot_orders is None else slot_orders[e]
    return SwitchedMixedOp(op_names, channels, stride, settings, order, name=name)(
        x, weights, edge_slots[e], train)
  return MixedOp(op_names, channels, stride, settings, name=name)(x, weights, train)


def _check_slots(module, slots) -> None:
  if module.switched and slots is None:
    raise ValueError("a switched supernet needs `slots` (the ops each choice point runs)")
  if slots is not None and not module.switched:
    raise ValueError("`slots` given to a static supernet: build it with switched=True")


def _cell_states(cell, inputs, edges, strides, edge_weights, train: bool, edge_slots):
  """The states of a search cell's DAG (its inputs, then its nodes), by the
  cell's way of computing its edges: scanned (switched, or static with
  `scan_edges`) where `scannable`, stacked (`stack_edges`), else per edge.
  `cell`: a `DartsSearchCell` or `NB201SearchCell` (called in its compact
  method, so the submodules are its own)."""
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
    states[dst] = _add(states[dst], _edge(
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


class DartsSearchCell(nn.Module):
  """DARTS cell: two preprocessed inputs, `steps` nodes, each the sum of
  mixed ops over all earlier states; output = concat of the nodes."""
  edge_ops: tuple[tuple[str, ...], ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  settings: OpSettings
  steps: int = spaces_lib.DARTS_STEPS
  stack_edges: bool = False   # compute via `mixed_dag` (same numbers)
  switched: bool = False      # edge_ops are all ops; `edge_slots` pick the active ones
  slot_orders: tuple | None = None   # per edge, `SwitchedMixedOp.order`
  scan_edges: bool = False    # compute via `scanned_dag` where `scannable` (same numbers)
  scan_switched: bool = False  # switched: the same, weights per edge as unscanned

  @nn.compact
  def __call__(self, s0, s1, edge_weights=None, train: bool = True, edge_slots=None):
    s0, s1 = preprocess_cell_inputs(s0, s1, self.channels, self.settings,
                                    self.reduction_prev, train)
    edges = spaces_lib.darts_edges(self.steps)
    strides = [2 if self.reduction and src < 2 else 1 for src, _ in edges]
    states = _cell_states(self, [s0, s1], edges, strides, edge_weights, train, edge_slots)
    return jnp.concatenate(states[2:], axis=-1)


class DartsSupernet(nn.Module):
  """The DARTS CIFAR search network over a subspace."""
  normal_ops: tuple[tuple[str, ...], ...]
  reduce_ops: tuple[tuple[str, ...], ...]
  num_classes: int
  channels: int = 16
  layers: int = 8
  steps: int = spaces_lib.DARTS_STEPS
  stem_multiplier: int = 3
  settings: OpSettings = OpSettings()
  stack_edges: bool = False
  switched: bool = False   # every op of the space; `slots` pick the active ones
  slot_orders: tuple | None = None   # per choice point, `SwitchedMixedOp.order`
  scan_edges: bool = False
  scan_switched: bool = False  # switched cells scan their edges (`scanned_dag`)

  @nn.compact
  def __call__(self, x, alphas: Alphas | None = None, train: bool = True,
               op_scales: Alphas | None = None, slots: Slots | None = None):
    _check_slots(self, slots)
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
                             c, reduction, reduction_prev, self.settings,
                             self.steps, self.stack_edges, self.switched,
                             orders[n:] if reduction else orders[:n],
                             scan_edges=self.scan_edges, scan_switched=self.scan_switched,
                             name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, w_reduce if reduction else w_normal, train,
                        slots_reduce if reduction else slots_normal)
      reduction_prev = reduction
    return nn.Dense(self.num_classes, name="classifier")(s1.mean(axis=(1, 2)))


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


class NB201SearchCell(nn.Module):
  """NAS-Bench-201 cell: node i = sum over j < i of mixed_op(j->i)(node j)."""
  edge_ops: tuple[tuple[str, ...], ...]
  channels: int
  settings: OpSettings
  stack_edges: bool = False   # compute via `mixed_dag` (same numbers)
  switched: bool = False      # edge_ops are all ops; `edge_slots` pick the active ones
  slot_orders: tuple | None = None   # per edge, `SwitchedMixedOp.order`
  scan_edges: bool = False    # compute via `scanned_dag` where `scannable` (same numbers)
  scan_switched: bool = False  # switched: the same, weights per edge as unscanned

  @nn.compact
  def __call__(self, x, edge_weights=None, train: bool = True, edge_slots=None):
    edges = spaces_lib.nb201_edges()
    strides = [1] * len(edges)
    return _cell_states(self, [x], edges, strides, edge_weights, train, edge_slots)[-1]


class NB201Supernet(nn.Module):
  """The NAS-Bench-201 network: stem, 3 stages of cells, residual reductions."""
  edge_ops: tuple[tuple[str, ...], ...]
  num_classes: int
  channels: int = 16
  cells_per_stage: int = 5
  settings: OpSettings = OpSettings(pool_bn=False)
  stack_edges: bool = False
  switched: bool = False   # every op of the space; `slots` pick the active ones
  slot_orders: tuple | None = None   # per choice point, `SwitchedMixedOp.order`
  scan_edges: bool = False
  scan_switched: bool = False  # switched cells scan their edges (`scanned_dag`)

  @nn.compact
  def __call__(self, x, alphas: Alphas | None = None, train: bool = True,
               op_scales: Alphas | None = None, slots: Slots | None = None):
    _check_slots(self, slots)
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
        x = NB201SearchCell(self.edge_ops, c, self.settings, self.stack_edges, self.switched,
                            self.slot_orders, scan_edges=self.scan_edges,
                            scan_switched=self.scan_switched,
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
  costliest first, see `SwitchedMixedOp`). Fields `supernet_config` lacks
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
  stack = bool(supernet_config.stack_edges)
  scan = bool(supernet_config.scan_edges)
  remat = bool(supernet_config.remat)
  scan_switched = bool(supernet_config.scan_switched)
  if stack and scan:
    raise UserError("supernet.stack_edges and supernet.scan_edges are two ways to compute "
                    "the same cells: set at most one")
  if remat and not scan:
    # Per edge, `nn.remat` (or a custom_vjp recomputing the mixed op) left
    # the gradient's bytes as they were; scanned, it cuts them
    # (docs/performance.md).
    raise UserError("supernet.remat recomputes the mixed ops of scanned edges: "
                    "set supernet.scan_edges=True as well")
  if scan:
    used = {n for ops in names for n in ops}
    lacking = sorted(n for n in used if not ops_lib.has_functional_form(n, 1))
    if lacking:
      raise UserError(f"supernet.scan_edges needs ops with a stacked form (radars_jax.nas.ops."
                      f"param_schema); these have none: {', '.join(lacking)}")
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
        settings=OpSettings(pool_bn=True, depthwise_impl=impl, remat=remat), stack_edges=stack,
        switched=switched, slot_orders=slot_orders, scan_edges=scan,
        scan_switched=scan_switched)
  if space.kind == "nb201_cell":
    return NB201Supernet(
        edge_ops=names, num_classes=num_classes, channels=supernet_config.channels,
        cells_per_stage=supernet_config.cells_per_stage,
        settings=OpSettings(pool_bn=False, depthwise_impl=impl, remat=remat),
        stack_edges=stack,
        switched=switched, slot_orders=slot_orders, scan_edges=scan,
        scan_switched=scan_switched)
  raise ValueError(f"unknown space kind {space.kind!r}")


def init_alphas(key: jax.Array, subspace: spaces_lib.Subspace,
                scale: float = 1e-3) -> tuple[jax.Array, ...]:
  """One small random vector per choice point over its active ops (DARTS:
  1e-3 * N(0, 1))."""
  # (the draws in one program, the scaling on the host: op by op each length
  # would compile its own programs, and a scaling inside the program would
  # be fused into the draw, moving the values by up to 2e-10)
  normals = _unit_normals(key, tuple(len(active) for active in subspace))
  if any(isinstance(z, jax.core.Tracer) for z in normals):   # (inside a trace)
    return tuple(scale * z for z in normals)
  return tuple(jax.device_put(np.asarray(z) * np.float32(scale)) for z in normals)


@functools.partial(jax.jit, static_argnums=(1,))
def _unit_normals(key: jax.Array, lengths: tuple[int, ...]) -> tuple[jax.Array, ...]:
  keys = jax.random.split(key, len(lengths))
  return tuple(jax.random.normal(k, (n,), jnp.float32) for k, n in zip(keys, lengths))


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
      at = next(i for i, part in enumerate(parts) if part.startswith("edge_"))
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
