"""The hardware-aware objective: what a found network costs, and the reward
and DNAS term that aim it at a target (`config.hardware`).

Three costs of a derived network (one op per choice point), each the cost
of its fixed part (stem, reductions, head: a whole network's measured cost
less its ops') plus that of each chosen op where it sits (`HardwareCosts`):
  * `params`: its weights (exact: the ops' own parameter counts);
  * `flops`: floating-point operations of one forward pass of one image,
    XLA's count (`cost_analysis`) of each op compiled alone at its input;
  * `latency`: seconds of one forward pass of `hardware.batch_size` images
    on this run's device, each op's timed alone at its input (its jitted
    forward, median of several runs, less that of no op) and kept in a
    table per device kind, op and input shape
    (`~/.cache/radars_jax/latency/`), so a search times each op once, not
    every candidate; a line fitted to six whole networks' times turns
    the ops' sum into a network's (`whole_network_cost` times one).
The reward of a sample (`reward`) combines its accuracy with its cost T and
`hardware.target`, in MNAS's form acc * (T / target)^w or TuNAS's absolute
form acc + w * |T / target - 1| (`hardware.form`, w = `hardware.weight`,
negative); the DNAS inside each subspace adds the same term of the cost of
the network its alphas derive, with the gradient of the expected cost
under them (`expected`, `penalty_fn`; ops whose output nobody uses
counted), to its loss, times `hardware.dnas_weight`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radars_jax.radars import cost_model as cost_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib

METRICS = ("params", "flops", "latency")
FORMS = ("mnas", "tunas")
LATENCY_REPEATS = 20


@dataclasses.dataclass
class HardwareCosts:
  """One metric's cost of the derived networks of a space: `base` (the
  network with no op) plus `per_op[c, o]` for op o at choice point c."""
  metric: str
  base: float
  per_op: np.ndarray
  space: spaces_lib.SearchSpace | None = None   # (drops dead ops, `cost_model.live_ops`)
  scale: float = 1.0   # latency: the fitted slope of networks' time over their ops' sum

  def of(self, subspace: spaces_lib.Subspace) -> float:
    """The cost of the network of `subspace` (a derived network has one op
    per choice point; more ops add up; ops whose output nobody uses cost
    nothing)."""
    mask = np.zeros(self.per_op.shape, bool)
    for c, ops in enumerate(subspace):
      mask[c, list(ops)] = True
    if self.space is not None:
      mask = cost_lib.live_ops(self.space, mask)
    return float(self.base + self.scale * np.sum(np.where(mask, self.per_op, 0.0)))

  def expected(self, alphas, subspace: spaces_lib.Subspace, slots=None,
               argmax: bool = False) -> jax.Array:
    """The expected cost under softmax(`alphas`) per choice point (over the
    ops of `subspace`, or over a switched supernet's `slots`, int [C, k]:
    slot s of choice point c holds op `slots[c, s]`, -1 none);
    differentiable in the alphas. `argmax`: the cost of each choice
    point's strongest op instead (the network the alphas derive)."""
    total = jnp.asarray(self.base, jnp.float32)
    per_op = jnp.asarray(self.scale * self.per_op, jnp.float32)
    for c, alpha in enumerate(alphas):
      if slots is None:
        ops = list(subspace[c])
        if not ops:
          continue
        costs, valid = per_op[c, jnp.asarray(ops)], jnp.ones(len(ops), bool)
      else:
        costs, valid = per_op[c, jnp.maximum(slots[c], 0)], slots[c] >= 0
      logits = jnp.where(valid, alpha, -jnp.inf)
      weights = (jax.nn.one_hot(jnp.argmax(logits), len(costs)) if argmax
                 else jax.nn.softmax(logits))
      total = total + jnp.sum(jnp.where(valid, weights * costs, 0.0))
    return total

  def range(self) -> tuple[float, float]:
    """The costs of the derived networks of the cheapest and of the
    costliest op at every choice point."""
    def network(pick):
      return tuple((int(pick(self.per_op[c, :len(cp.ops)])),)
                   for c, cp in enumerate(self.space.choice_points))
    return self.of(network(np.argmin)), self.of(network(np.argmax))

  def to_json(self) -> dict:
    return {"metric": self.metric, "base": self.base, "scale": self.scale,
            "per_op": self.per_op.tolist()}


def reward(accuracy, cost, target: float, form: str, weight: float):
  """MNAS: accuracy * (cost / target) ** weight; TuNAS: accuracy + weight *
  |cost / target - 1| (`weight` < 0 rewards networks near the target)."""
  ratio = cost / target
  if form == "mnas":
    return accuracy * ratio ** weight
  if form == "tunas":
    return accuracy + weight * abs(ratio - 1.0)
  raise ValueError(f"unknown hardware.form {form!r}; known: {', '.join(FORMS)}")


def penalty_fn(costs: HardwareCosts, hardware_config):
  """`(alphas, subspace, slots) -> loss term`: `hardware.dnas_weight`
  times the cost's distance from the target in `hardware.form` (MNAS:
  -weight * log(T / target); TuNAS: -weight * |T / target - 1|), a
  function of the alphas only. T is the cost of the network the alphas
  derive (each choice point's strongest op), its gradient the expected
  cost's (straight through): the term turns as soon as the derived network
  crosses the target, where the expected cost's own would push on, past
  it, until the mixture reaches the target (measured: a cell of `none`s)."""
  target, weight = float(hardware_config.target), float(hardware_config.weight)
  scale, form = float(hardware_config.dnas_weight), hardware_config.form

  def penalty(alphas, subspace, slots=None):
    soft = costs.expected(alphas, subspace, slots)
    derived = costs.expected(alphas, subspace, slots, argmax=True)
    ratio = (derived + soft - jax.lax.stop_gradient(soft)) / target
    term = jnp.log(ratio) if form == "mnas" else jnp.abs(ratio - 1.0)
    return -scale * weight * term

  return penalty


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def measure(space: spaces_lib.SearchSpace, build, input_shape, metric: str,
            batch_size: int = 1, table_path: str | os.PathLike | None = None) -> HardwareCosts:
  """`metric`'s costs of the networks `build(subspace)` makes, on inputs
  [batch_size, *input_shape] (params and flops: per image, batch 1).
  Latency: each op timed once per distinct input on this device, read from
  and added to the table at `table_path` (`latency_table_path()` by
  default)."""
  if metric not in METRICS:
    raise ValueError(f"unknown hardware.metric {metric!r}; known: {', '.join(METRICS)}")
  batch = batch_size if metric == "latency" else 1
  empty_subspace = tuple(() for _ in space.choice_points)
  probe = build(empty_subspace)
  x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
  params = jax.eval_shape(lambda x: probe.init(jax.random.key(0), x, None), x)

  def forward_with(record):  # (the network of no op: every mixed op's input)
    return jax.eval_shape(lambda p, x: _apply(probe, p, x, record), params, x)

  _, inputs, contexts = cost_lib.mixed_op_inputs(space, probe, forward_with)
  table = LatencyTable(table_path) if metric == "latency" else None
  own, without = {}, {}
  for key, module in contexts.items():
    name, stride, channels, shape = key
    place = (stride, channels, shape)
    if place not in without:
      without[place] = _module_cost(module.clone(parent=None, name=None, op_names=()), shape,
                                    metric, table, ("", *place))
    own[key] = max(_module_cost(module.clone(parent=None, name=None, op_names=(name,)),
                                shape, metric, table, key) - without[place], 0.0)
  per_op = np.zeros((space.num_choice_points, space.max_ops))
  for c, cp in enumerate(space.choice_points):
    for o, name in enumerate(cp.ops):
      per_op[c, o] = sum(own[(name, m.stride, m.channels, shape)] for m, shape in inputs[c])
  # The base from a network whose every op is live (XLA drops the stem of
  # a network of no op: its output does not depend on the input), less
  # its ops' costs; latency: a line fitted to several such networks' times.
  costs = HardwareCosts(metric, 0.0, per_op, space)
  references = reference_subspaces(space, 6 if metric == "latency" else 1)
  measured = [network_cost(model, p, xs, metric, table)
              for model, p, xs in (_abstract(build(sub), batch, input_shape)
                                   for sub in references)]
  summed = np.array([costs.of(sub) for sub in references])
  if metric == "latency":
    costs.scale, costs.base = (float(v) for v in np.polyfit(summed, measured, 1))
    table.save()
  else:
    costs.base = float(measured[0] - summed[0])
  return costs


def cost_ranges(space: spaces_lib.SearchSpace, build, input_shape) -> dict:
  """{"params": [cheapest, costliest], "flops": [...]}: the weights and the
  FLOPs (one image) of the derived networks of the cheapest and of the
  costliest op at every choice point (as the supernets `build(subspace)`
  makes them; `HardwareCosts.range`)."""
  return {metric: list(measure(space, build, input_shape, metric).range())
          for metric in ("params", "flops")}


def reference_subspaces(space: spaces_lib.SearchSpace,
                        count: int = 6) -> list[spaces_lib.Subspace]:
  """`count` networks whose every choice point has a live op (not `none`):
  the first such op everywhere, then ops drawn at random (a fixed seed)."""
  rng = np.random.default_rng(0)
  live = [[o for o, n in enumerate(cp.ops) if n != "none"] or list(range(len(cp.ops)))
          for cp in space.choice_points]
  first = tuple((ops[0],) for ops in live)
  return [first] + [tuple((int(rng.choice(ops)),) for ops in live) for _ in range(count - 1)]


def _abstract(model, batch: int, input_shape):
  x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
  return model, jax.eval_shape(lambda x: model.init(jax.random.key(0), x, None), x), x


def _apply(model, params, x, intercept=None):
  if intercept is None:
    return model.apply(params, x, None)
  with nn.intercept_methods(intercept):
    return model.apply(params, x, None)


def _module_cost(module, shape, metric: str, table, key) -> float:
  """`metric` of one mixed op (of at most one op) on an input of `shape`."""
  x = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
  params = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, None), x)
  if metric == "params":
    return float(supernet_lib.count_params(params.get("params", {})))
  forward = jax.jit(lambda p, x: module.apply(p, x, None))
  if metric == "flops":
    return _flops(forward, params, x)
  # (the op's settings, e.g. its depthwise kernels, are part of what is timed)
  return table.get((*key, module.settings), lambda: time_forward(forward, params, x))


def network_cost(model, params, x, metric: str, table=None) -> float:
  """`metric` of a whole network `model` (its abstract `params`, input `x`);
  latency from `table` where it has the network (a `LatencyTable`: a
  search's calibration networks, timed once, so that a rerun sees the
  same costs)."""
  if metric == "params":
    return float(supernet_lib.count_params(params.get("params", {})))
  forward = jax.jit(lambda p, x: _apply(model, p, x))
  if metric == "flops":
    return _flops(forward, params, x)
  if table is None:
    return time_forward(forward, params, x)
  name = hashlib.sha1(repr(model).encode()).hexdigest()[:16]
  return table.get(("network", name, tuple(x.shape)), lambda: time_forward(forward, params, x))


def whole_network_cost(model, input_shape, metric: str, batch_size: int = 1) -> float:
  """`metric` of `model` (applied as the search's supernets are, without
  alphas) measured whole: its weights, XLA's FLOPs of one image, or the
  seconds of its forward pass on [batch_size, *input_shape], timed here."""
  model, params, x = _abstract(model, batch_size if metric == "latency" else 1, input_shape)
  return network_cost(model, params, x, metric)


def _flops(forward, params, x) -> float:
  analysis = forward.lower(params, x).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):   # (older jax: one dict per device)
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def time_forward(forward, params, x) -> float:
  """Median seconds of `forward` on random values of `params`' and `x`'s
  shapes, after a warm-up call."""
  key = jax.random.key(0)
  values = jax.tree_util.tree_map(
      lambda s: jax.random.normal(key, s.shape, s.dtype) * 0.1
      if jnp.issubdtype(s.dtype, jnp.floating) else jnp.zeros(s.shape, s.dtype), params)
  inputs = jax.random.normal(key, x.shape, x.dtype)
  jax.block_until_ready(forward(values, inputs))
  times = []
  for _ in range(LATENCY_REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(forward(values, inputs))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


# ---------------------------------------------------------------------------
# The latency table
# ---------------------------------------------------------------------------

def latency_table_path() -> Path:
  """The latency table of this device kind: in `$RADARS_JAX_LATENCY_DIR`
  where set, else `$XDG_CACHE_HOME/radars_jax/latency` (default
  `~/.cache`), one file per backend and device kind."""
  root = os.environ.get("RADARS_JAX_LATENCY_DIR")
  if not root:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "radars_jax", "latency")
  kind = jax.devices()[0].device_kind.replace(" ", "_").replace("/", "_")
  return Path(root) / f"{jax.default_backend()}_{kind}.json"


class LatencyTable:
  """Measured seconds by op and input, for one device kind, kept in a JSON
  file between runs (`get` times only what the file lacks)."""

  def __init__(self, path: str | os.PathLike | None = None):
    self.path = Path(path) if path is not None else latency_table_path()
    try:
      self.entries = json.loads(self.path.read_text())
    except (OSError, ValueError):
      self.entries = {}
    self.measured = 0

  def get(self, key, measure) -> float:
    name = "|".join(map(str, key))
    if name not in self.entries:
      self.entries[name] = measure()
      self.measured += 1
    return float(self.entries[name])

  def save(self) -> None:
    if not self.measured:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
    os.replace(tmp, self.path)
