"""The mixed op of one choice point: static (`MixedOp`) or switched
(`SwitchedMixedOp`).

A `MixedOp` holds only the ops active at its choice point, so XLA never sees
an inactive op and memory scales with the subspace, not the space. Its output
is the sum over active ops of softmax(alpha)_i * op_i(x); with `alphas=None`
it is the plain sum, which for one op per edge (`spaces.genotype_subspace`)
is exactly the derived discrete network, evaluated with inherited weights.
`none` ops contribute zero and are never computed (their alpha still counts
in the softmax).

A `SwitchedMixedOp` holds every op of the space and takes the active ops as
data: `slots`, int [choice points, k], names the op in each of a choice
point's k slots (-1: empty slot), and each op runs through `lax.switch`
where a slot holds it. One compiled program then serves every subspace of
at most k ops per choice point (the RADARS loop compiles once per k, not
once per sample) and computes the same numbers as the static mixed op of
that subspace. Its backward pass recomputes each op from the choice point's
input (`recomputed_switch`), and its ops' convolutions take gradients XLA
runs fast inside a switch (`radars_jax.nas.conv`).

Both declare their ops' weights under the op's name (`sep_conv_3x3/...`),
so the same op on the same edge has the same path in every subspace and
either kind of supernet.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.nas import ops as ops_lib
from radars_jax.nas.ops import OpSettings


def accumulate(total, y):
  """`total + y`, or `y` where nothing is summed yet (`total` None): a sum
  of the terms that exist, without a zero to start it from."""
  return y if total is None else total + y


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
      out = zeros_out(x, self.stride, self.channels)
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


def switched_ops(op_names, channels: int, stride: int, settings: OpSettings) -> list:
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


def slot_weight(slots, weights, op: int):
  """(whether any slot holds `op` as int32 0/1, the mixing weight of the
  slot that holds it or 0): `op`'s share of a switched choice point."""
  hit = slots == op
  return jnp.any(hit).astype(jnp.int32), jnp.sum(jnp.where(hit, weights, 0.0))


def zeros_out(x, stride: int, channels: int | None):
  """The zeros a choice point of no op (or `none` alone) outputs: its ops'
  output shape, `x` subsampled by `stride`, with `channels` channels (None:
  as many as `x`)."""
  x = x[:, ::stride, ::stride, :]
  return jnp.zeros(x.shape[:-1] + (channels or x.shape[-1],), x.dtype)


def switched_branch(ops, stride: int, channels: int | None, train: bool):
  """`branch(i)`: op i of a switched choice point as `(x, its weights) ->
  output`; zeros for an absent op (i None) or `none`."""
  def branch(i):
    if i is None or ops[i] is None:
      return lambda x, params: zeros_out(x, stride, channels)
    return lambda x, params: ops[i].apply({"params": params}, x, train)
  return branch


@functools.lru_cache(maxsize=None)
def switched_mixed_fn(op_names, channels: int, stride: int, settings: OpSettings,
                      order: tuple[int, ...] | None, train: bool):
  """A switched choice point as a pure function of (its ops' weights, its
  mixing weights [k], its slots [k], its input): the sum over slots s of
  weights[s] * op[slots[s]](x).

  Computed op by op, not slot by slot: every op of the choice point is one
  two-way `lax.switch` (`recomputed_switch`) between the op and zeros,
  taken where a slot holds it. So the program holds each op once, whatever
  the number of slots: its size does not grow with k (the program of each
  k differs only in the slots' width). The ops are visited in `order`
  (the slots' order, `supernet.subspace_slots`), so the sum adds the same
  terms in the same order as slot by slot (plus exact zeros). One function
  object per kind of choice point (as `edge_scan`'s scan bodies), so that
  JAX traces it once for all the choice points of that kind."""
  ops = switched_ops(op_names, channels, stride, settings)
  branch = switched_branch(ops, stride, channels, train)
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
      taken, weight = slot_weight(slots, weights, o)
      out = accumulate(out, recomputed_switch(taken, [weighted(None), weighted(o)], x,
                                              (params[o], weight)))
    return branch(None)(x, params) if out is None else out

  return run


class SwitchedMixedOp(nn.Module):
  """One choice point of a switched supernet: declares the weights of every
  op of the choice point (under the paths `MixedOp` uses) and sums, over
  the k slots, weight[s] * op[slots[s]](x): each op runs where a slot
  holds it (`lax.switch` at run time; an empty slot or `none` adds
  nothing; `switched_mixed_fn`).

  `order` ranks the ops, costliest first; slots hold a subspace's ops in
  that order (`supernet.subspace_slots`) and the ops are summed in it. The
  ops are built `switch_friendly` (`radars_jax.nas.conv`)."""
  op_names: tuple[str, ...]   # every op of the choice point
  channels: int
  stride: int
  settings: OpSettings
  order: tuple[int, ...] | None = None   # None: as listed

  @nn.compact
  def __call__(self, x, weights, slots, train: bool = True):
    ops = switched_ops(self.op_names, self.channels, self.stride, self.settings)
    params = _declare_switched_params(self, self.op_names, ops, x, train)
    mixed = switched_mixed_fn(self.op_names, self.channels, self.stride, self.settings,
                              self.order, train)
    return mixed(params, weights, slots, x)


class SwitchedEdgeParams(nn.Module):
  """The weights of one switched choice point, declared as `SwitchedMixedOp`
  declares them (same paths) but not applied: `edge_scan.scanned_dag`
  stacks those of its edges and runs `switched_mixed_fn` in a scan. `x`:
  an input of the edge's shape (only its shape is read, at
  initialisation)."""
  op_names: tuple[str, ...]
  channels: int
  stride: int
  settings: OpSettings

  @nn.compact
  def __call__(self, x, train: bool = True) -> list:
    ops = switched_ops(self.op_names, self.channels, self.stride, self.settings)
    return _declare_switched_params(self, self.op_names, ops, x, train)
