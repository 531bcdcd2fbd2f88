"""Tabular NAS-Bench-201 mode: search strategies scored by table look-up.

A NAS-Bench-201 cell has 6 edges, each one of 5 ops. Op indices follow
`NB201_OPS`; edges follow their order in an arch string
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: (1<-0), (2<-0), (2<-1), (3<-0),
(3<-1), (3<-2). An architecture's index in a `Table` is its op indices read
as a base-5 number, first edge most significant.

Strategies compared at equal query budgets. A *query* is one DISTINCT
architecture looked up; looking up an architecture again is free (cached)
and still gives its value. Every strategy stops when it has made exactly
`queries` queries and returns the best queried architecture by the search
metric, with its report value:
  * `ppo`: the RADARS controller (`radars_jax.controller`) with k = 1: each
    sample is one architecture; `tabular_controller_config()` holds its
    settings for this setting.
  * `reinforce`: TuNAS-style REINFORCE: independent categorical logits per
    edge, one architecture per step, exponential moving-average baseline
    (decay 0.95), Adam.
  * `evolution`: regularized evolution (Real et al. 2019): population 10,
    tournament of 3, the child mutates one edge of the winner to another op,
    the oldest member dies.
  * `random`: uniform random architectures.
Policy-based strategies can collapse on architectures already queried (no
new query comes); after `stall_patience` samples without a new query they
sample at twice the temperature (doubling again while stalled, back to 1 at
the next new query). PPO learns off-policy from those samples with their
tempered behaviour log-probabilities.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from radars_jax import controller as controller_lib
from radars_jax.errors import UserError

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node)
NUM_EDGES = len(NB201_EDGES)
NUM_OPS = len(NB201_OPS)
NUM_ARCHS = NUM_OPS ** NUM_EDGES
METHODS = ("ppo", "reinforce", "evolution", "random")


# ---------------------------------------------------------------------------
# Architecture strings
# ---------------------------------------------------------------------------

def arch_str_from_ops(op_indices) -> str:
  """NAS-Bench-201 string of a cell given its 6 op indices (edge order above)."""
  op_indices = [int(o) for o in op_indices]
  if len(op_indices) != NUM_EDGES or not all(0 <= o < NUM_OPS for o in op_indices):
    raise UserError(f"a NAS-Bench-201 cell needs {NUM_EDGES} op indices in 0..{NUM_OPS - 1}, "
                    f"got {op_indices}")
  nodes = []
  edge = 0
  for node in range(1, 4):
    parts = []
    for source in range(node):
      parts.append(f"{NB201_OPS[op_indices[edge]]}~{source}")
      edge += 1
    nodes.append("|" + "|".join(parts) + "|")
  return "+".join(nodes)


def ops_from_arch_str(arch_str: str) -> tuple[int, ...]:
  """The 6 op indices of a NAS-Bench-201 string (UserError if malformed)."""
  nodes = arch_str.strip().split("+")
  ops = []
  if len(nodes) == 3:
    for node, text in enumerate(nodes, start=1):
      if not (text.startswith("|") and text.endswith("|")):
        break
      parts = text[1:-1].split("|")
      if len(parts) != node:
        break
      for source, part in enumerate(parts):
        name, _, src = part.partition("~")
        if name not in NB201_OPS or src != str(source):
          break
        ops.append(NB201_OPS.index(name))
  if len(ops) != NUM_EDGES:
    raise UserError(f"not a NAS-Bench-201 arch string: {arch_str!r} "
                    "(expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with ops "
                    f"{', '.join(NB201_OPS)})")
  return tuple(ops)


def arch_index(op_indices) -> int:
  """Index 0..15624 of a cell: its op indices as a base-5 number."""
  index = 0
  for o in op_indices:
    index = index * NUM_OPS + int(o)
  return index


def ops_from_index(index: int) -> tuple[int, ...]:
  """Inverse of `arch_index`."""
  ops = []
  for _ in range(NUM_EDGES):
    index, o = divmod(int(index), NUM_OPS)
    ops.append(o)
  return tuple(reversed(ops))


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Table:
  """Metric and report values of NAS-Bench-201 cells, indexed by
  `arch_index` (NaN where the CSV has no row for a cell)."""
  path: str
  metric: str
  report: str
  metric_values: np.ndarray   # float64 [NUM_ARCHS]
  report_values: np.ndarray   # float64 [NUM_ARCHS]

  @property
  def num_present(self) -> int:
    return int(np.sum(~np.isnan(self.metric_values)))


def load_table(path: str, metric: str, report: str) -> Table:
  """Read a CSV with an `arch_str` column and the named metric and report
  columns. UserError (one line) for a missing file, column, a malformed arch
  string, a non-numeric value or a duplicated cell."""
  if not os.path.isfile(path):
    raise UserError(f"table not found: {path} (NAS-Bench-201 CSV with columns arch_str, "
                    f"{metric}, {report})")
  metric_values = np.full(NUM_ARCHS, np.nan)
  report_values = np.full(NUM_ARCHS, np.nan)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    for needed in ("arch_str", metric, report):
      if needed not in columns:
        raise UserError(f"column {needed!r} not in {path} (columns: {', '.join(columns) or 'none'})")
    for line, row in enumerate(reader, start=2):
      index = arch_index(ops_from_arch_str(row["arch_str"] or ""))
      if not np.isnan(metric_values[index]):
        raise UserError(f"{path}:{line}: cell {row['arch_str']} appears twice")
      try:
        metric_values[index] = float(row[metric])
        report_values[index] = float(row[report])
      except (TypeError, ValueError):
        raise UserError(f"{path}:{line}: {metric}={row[metric]!r}, {report}={row[report]!r} "
                        "are not both numbers") from None
  if np.all(np.isnan(metric_values)):
    raise UserError(f"table {path} has no rows")
  return Table(path, metric, report, metric_values, report_values)


class QueryBudget:
  """Table look-ups with a budget of distinct architectures.

  `lookup(index)` returns the metric value, counting a query the first time
  an architecture is looked up; a repeat is free (cached). Once `queries`
  are used, a new architecture returns None (not queried)."""

  def __init__(self, table: Table, queries: int):
    self.table = table
    self.queries = queries
    self.queried: dict[int, float] = {}
    self.order: list[int] = []
    self.lookups = 0

  @property
  def used(self) -> int:
    return len(self.order)

  @property
  def exhausted(self) -> bool:
    return self.used >= self.queries

  def lookup(self, index: int) -> float | None:
    index = int(index)
    if index in self.queried:
      self.lookups += 1
      return self.queried[index]
    if self.exhausted:
      return None
    value = float(self.table.metric_values[index])
    self.queried[index] = value
    self.order.append(index)
    self.lookups += 1
    return value


@dataclasses.dataclass
class SearchResult:
  """What one search run found.

  trajectory[i]: best metric value among the first i + 1 queries.
  samples: look-ups including free repeats."""
  method: str
  seed: int
  queries: int
  samples: int
  best_arch: str
  best_metric: float
  best_report: float
  trajectory: list[float]
  seconds: float


def _result(method: str, seed: int, budget: QueryBudget, start: float) -> SearchResult:
  values = np.array([budget.queried[i] for i in budget.order])
  best = budget.order[int(np.argmax(values))]
  return SearchResult(
      method=method, seed=seed, queries=budget.used, samples=budget.lookups,
      best_arch=arch_str_from_ops(ops_from_index(best)),
      best_metric=float(budget.table.metric_values[best]),
      best_report=float(budget.table.report_values[best]),
      trajectory=np.maximum.accumulate(values).tolist(),
      seconds=time.time() - start)


def _check(table: Table, queries: int) -> None:
  if table.num_present != NUM_ARCHS:
    raise UserError(f"table {table.path} has {table.num_present} of the {NUM_ARCHS} "
                    "NAS-Bench-201 cells; a search needs all of them")
  if not 1 <= queries <= NUM_ARCHS:
    raise UserError(f"--queries={queries} must be between 1 and {NUM_ARCHS}")


# ---------------------------------------------------------------------------
# Random search and regularized evolution
# ---------------------------------------------------------------------------

def search_random(table: Table, queries: int, seed: int) -> SearchResult:
  """Uniform random architectures until `queries` distinct ones are queried."""
  _check(table, queries)
  start = time.time()
  rng = np.random.default_rng(seed)
  budget = QueryBudget(table, queries)
  while not budget.exhausted:
    budget.lookup(rng.integers(NUM_ARCHS))
  return _result("random", seed, budget, start)


def search_evolution(table: Table, queries: int, seed: int, population_size: int = 10,
                     sample_size: int = 3, max_samples_factor: int = 100) -> SearchResult:
  """Regularized evolution (aging): random initial population, then
  repeatedly: tournament of `sample_size` random members, the best one's
  child (one edge changed to a different op) joins, the oldest leaves."""
  _check(table, queries)
  start = time.time()
  rng = np.random.default_rng(seed)
  budget = QueryBudget(table, queries)
  population: list[tuple[tuple[int, ...], float]] = []
  while len(population) < population_size and not budget.exhausted:
    ops = tuple(int(o) for o in rng.integers(NUM_OPS, size=NUM_EDGES))
    population.append((ops, budget.lookup(arch_index(ops))))
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    contenders = rng.choice(len(population), size=min(sample_size, len(population)),
                            replace=False)
    parent = max((population[i] for i in contenders), key=lambda member: member[1])[0]
    child = list(parent)
    edge = int(rng.integers(NUM_EDGES))
    child[edge] = int(rng.choice([o for o in range(NUM_OPS) if o != parent[edge]]))
    child = tuple(child)
    population.append((child, budget.lookup(arch_index(child))))
    population.pop(0)
  while not budget.exhausted:  # guard, practically never: fill with random cells
    budget.lookup(rng.integers(NUM_ARCHS))
  return _result("evolution", seed, budget, start)


# ---------------------------------------------------------------------------
# REINFORCE (TuNAS)
# ---------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("lr",))
def _reinforce_update(logits, opt_state, ops, advantage, lr: float):
  """One REINFORCE step: gradient of -advantage * log pi(ops), Adam."""
  def loss_fn(l):
    logp = jax.nn.log_softmax(l, axis=-1)
    return -advantage * jnp.sum(jnp.take_along_axis(logp, ops[:, None], axis=-1))
  grads = jax.grad(loss_fn)(logits)
  updates, opt_state = optax.adam(lr).update(grads, opt_state, logits)
  return optax.apply_updates(logits, updates), opt_state


@jax.jit
def _categorical_sample(key, logits, temperature):
  return jax.random.categorical(key, logits / temperature, axis=-1)


def search_reinforce(table: Table, queries: int, seed: int, lr: float = 0.1,
                     baseline_decay: float = 0.95, stall_patience: int = 20,
                     max_samples_factor: int = 100) -> SearchResult:
  """TuNAS-style REINFORCE: independent categorical logits per edge (zero
  init), one architecture per step, reward = metric / 100, advantage =
  reward - moving-average baseline (decay `baseline_decay`, started at the
  first reward), Adam with learning rate `lr`."""
  _check(table, queries)
  start = time.time()
  budget = QueryBudget(table, queries)
  key = jax.random.PRNGKey(seed)
  logits = jnp.zeros((NUM_EDGES, NUM_OPS), jnp.float32)
  opt_state = optax.adam(lr).init(logits)
  baseline = None
  stall = _Stall(stall_patience)
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    key, sample_key = jax.random.split(key)
    ops = _categorical_sample(sample_key, logits, stall.temperature)
    used = budget.used
    reward = budget.lookup(arch_index(np.asarray(ops))) / 100.0
    stall.observe(budget.used - used, 1)
    if budget.exhausted:
      break
    baseline = reward if baseline is None else baseline
    logits, opt_state = _reinforce_update(logits, opt_state, ops, reward - baseline, lr)
    baseline = baseline_decay * baseline + (1.0 - baseline_decay) * reward
  _fill_randomly(budget, seed)
  return _result("reinforce", seed, budget, start)


class _Stall:
  """Sampling temperature that doubles (up to 64) after `patience` samples
  without a new query and returns to 1 at the next new query."""

  def __init__(self, patience: int):
    self.patience = patience
    self.temperature = 1.0
    self.samples_without_new = 0

  def observe(self, new_queries: int, samples: int) -> None:
    if new_queries > 0:
      self.temperature, self.samples_without_new = 1.0, 0
      return
    self.samples_without_new += samples
    if self.samples_without_new >= self.patience:
      self.temperature = min(2.0 * self.temperature, 64.0)
      self.samples_without_new = 0


def _fill_randomly(budget: QueryBudget, seed: int) -> None:
  """Guard for a run that hit its sample cap (practically never): spend the
  rest of the budget on random cells, so every run makes exactly Q queries."""
  rng = np.random.default_rng(seed + 7919)
  while not budget.exhausted:
    budget.lookup(rng.integers(NUM_ARCHS))


# ---------------------------------------------------------------------------
# PPO: the RADARS controller with k = 1
# ---------------------------------------------------------------------------

def tabular_controller_config() -> ml_collections.ConfigDict:
  """The controller's settings for tabular search with a small query budget
  (every sample is one architecture, k = 1): few samples per iteration, so
  that the policy is updated often; a small critic and buffer, so that an
  update is cheap."""
  c = controller_lib.default_controller_config()
  c.samples_per_iteration = 10
  c.lr = 0.05
  c.ppo_epochs = 8
  c.clip_eps = 0.2
  c.entropy_coef = 0.01
  c.replay_capacity = 256
  c.replay_batch = 32
  c.replay_weight = 0.5
  c.critic_hidden = (32, 32)
  c.critic_steps = 50
  return c


def search_ppo(table: Table, queries: int, seed: int,
               config: ml_collections.ConfigDict | None = None,
               stall_patience: int = 20, max_samples_factor: int = 100) -> SearchResult:
  """The RADARS PPO controller with k = 1 over the 6 edges x 5 ops. Each
  iteration samples `samples_per_iteration` cells, looks them up (repeats
  are free and still train the controller; cells beyond the budget are left
  unscored) and runs one `controller_update`."""
  _check(table, queries)
  start = time.time()
  config = tabular_controller_config() if config is None else config
  hparams = controller_lib.ControllerHParams.from_config(config)
  num_samples = int(config.samples_per_iteration)
  budget = QueryBudget(table, queries)
  key, init_key = jax.random.split(jax.random.PRNGKey(seed))
  state = controller_lib.init_controller(init_key, NUM_EDGES, NUM_OPS, config)
  alive = jnp.ones((NUM_EDGES, NUM_OPS), bool)
  stall = _Stall(stall_patience)
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    key, sample_key, update_key = jax.random.split(key, 3)
    ops, behaviour_logp = controller_lib.sample_subspaces(
        sample_key, state.logits, alive, 1, num_samples, stall.temperature,
        per_choice_point=True)
    cells = np.asarray(ops)[..., 0]
    used = budget.used
    values = [budget.lookup(arch_index(cell)) for cell in cells]
    stall.observe(budget.used - used, num_samples)
    if budget.exhausted:
      break
    rewards = np.array([np.nan if v is None else v for v in values], np.float32)
    state, _ = controller_lib.controller_update(
        state, update_key, ops, behaviour_logp, rewards, alive, hparams)
  _fill_randomly(budget, seed)
  return _result("ppo", seed, budget, start)


STRATEGIES: dict[str, Callable[..., SearchResult]] = {
    "ppo": search_ppo,
    "reinforce": search_reinforce,
    "evolution": search_evolution,
    "random": search_random,
}


def run_search(method: str, table: Table, queries: int, seed: int, **kwargs) -> SearchResult:
  """Run strategy `method` (one of METHODS) once."""
  if method not in STRATEGIES:
    raise UserError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
  return STRATEGIES[method](table, queries, seed, **kwargs)
