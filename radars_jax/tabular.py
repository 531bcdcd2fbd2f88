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
  * `ppo`: the RADARS controller (`radars_jax.radars.controller`) with k = 1: each
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

from radars_jax import config_defaults
from radars_jax.radars import controller as controller_lib
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
  c = config_defaults.controller_config()
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


def run_strategy(method: str, table: Table, queries: int, seed: int, **kwargs) -> SearchResult:
  """Run strategy `method` (one of METHODS) once."""
  if method not in STRATEGIES:
    raise UserError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
  return STRATEGIES[method](table, queries, seed, **kwargs)


# ---------------------------------------------------------------------------
# Comparing strategies at equal query budgets (experiments/nb201_search.py
# and `config.mode = "tabular"` both run this)
# ---------------------------------------------------------------------------

def parse_methods(methods) -> tuple[str, ...]:
  """Method names from "a,b" or a sequence, in order, without repeats;
  UserError for an unknown or empty selection."""
  if isinstance(methods, str):
    names = [m.strip() for m in methods.split(",")]
  else:
    names = [str(m).strip() for m in methods]
  names = list(dict.fromkeys(n for n in names if n))
  if not names:
    raise UserError(f"no methods given: choose from {', '.join(METHODS)}")
  unknown = [n for n in names if n not in METHODS]
  if unknown:
    raise UserError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
  return tuple(names)


def compare(table: Table, methods, queries: int, seeds: int,
            progress: bool = False) -> dict[str, list[SearchResult]]:
  """Every method in `methods` once per seed 0..seeds-1, each with a budget
  of `queries` distinct architectures."""
  from radars_jax import metrics  # pylint: disable=import-outside-toplevel
  methods = parse_methods(methods)
  _check(table, queries)
  if int(seeds) < 1:
    raise UserError(f"--seeds={seeds} must be at least 1")
  results: dict[str, list[SearchResult]] = {m: [] for m in methods}
  with metrics.progress_bar(len(methods) * int(seeds), "nb201 search", enabled=progress,
                            unit="run") as bar:
    for method in methods:
      bar.set_postfix_str(method)
      for seed in range(int(seeds)):
        results[method].append(run_strategy(method, table, queries, seed))
        bar.update()
  return results


def _stats(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std


def summarize(results: dict[str, list[SearchResult]]) -> dict[str, dict]:
  """Per method: mean and std over seeds of the best metric found and of its
  report value, mean and median seconds per run (the first run of `ppo` and
  `reinforce` includes their jit compiles, so the median is the steady
  cost), mean look-ups (with free repeats) per run, number of runs."""
  summary = {}
  for method, runs in results.items():
    metric_mean, metric_std = _stats([r.best_metric for r in runs])
    report_mean, report_std = _stats([r.best_report for r in runs])
    summary[method] = dict(
        runs=len(runs),
        best_metric_mean=metric_mean, best_metric_std=metric_std,
        best_report_mean=report_mean, best_report_std=report_std,
        seconds_mean=float(np.mean([r.seconds for r in runs])),
        seconds_median=float(np.median([r.seconds for r in runs])),
        samples_mean=float(np.mean([r.samples for r in runs])))
  return summary


def comparison_payload(table: Table, queries: int,
                       results: dict[str, list[SearchResult]]) -> dict:
  """Everything about a comparison as one JSON-able dict: the setting,
  per-method statistics (`summary`), the mean best-so-far curve and every
  run (`runs`, with its trajectory)."""
  summary = summarize(results)
  methods = {}
  for method, runs in results.items():
    curves = np.array([r.trajectory for r in runs])
    methods[method] = dict(
        summary[method],
        mean_trajectory=[round(float(v), 6) for v in curves.mean(axis=0)],
        runs=[dataclasses.asdict(r) for r in runs])
  seeds = max(len(runs) for runs in results.values())
  return dict(
      table=os.path.abspath(table.path), metric=table.metric, report=table.report,
      queries=int(queries), seeds=list(range(seeds)),
      table_best_metric=float(np.nanmax(table.metric_values)),
      table_best_report=float(table.report_values[int(np.nanargmax(table.metric_values))]),
      std="sample standard deviation over seeds (ddof=1)",
      ppo_controller=tabular_controller_config().to_dict(),
      summary=summary, methods=methods)


def run_comparison(path: str, metric: str, report: str, queries: int, seeds: int,
                   methods=METHODS, progress: bool = False) -> dict:
  """Load the table, run `compare`, return `comparison_payload`."""
  table = load_table(path, metric, report)
  return comparison_payload(table, queries, compare(table, methods, queries, seeds, progress))


def format_summary(payload: dict) -> str:
  """The comparison as a text table: method, mean±std of the best metric
  and of its report value over seeds, mean and median seconds per run."""
  metric, report = payload["metric"], payload["report"]
  header = ("method", f"best {metric}", f"its {report}", "mean s", "median s")
  rows = [(m, f"{s['best_metric_mean']:.3f} ± {s['best_metric_std']:.3f}",
           f"{s['best_report_mean']:.3f} ± {s['best_report_std']:.3f}",
           f"{s['seconds_mean']:.2f}", f"{s['seconds_median']:.2f}")
          for m, s in payload["summary"].items()]
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  lines = [f"{payload['queries']} queries x {len(payload['seeds'])} seeds, "
           f"table best {metric} {payload['table_best_metric']:.3f} "
           f"({report} {payload['table_best_report']:.3f})"]
  for i, row in enumerate([header] + rows):
    lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                           for j, (c, w) in enumerate(zip(row, widths))))
    if i == 0:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


def dumps_compact(obj) -> str:
  """JSON with indent 2 but every list of numbers on one line (trajectories
  stay readable and the file small)."""
  import json  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel
  text = json.dumps(obj, indent=2)
  number_list = re.compile(r"\[\s*((?:-?[0-9.eE+-]+|NaN|-?Infinity)(?:,\s*(?:-?[0-9.eE+-]+|NaN|-?Infinity))*)\s*\]")
  return number_list.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                         text) + "\n"


def write_payload(path, payload: dict) -> None:
  """Write `payload` as compact JSON, atomically (creates the folder)."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(dumps_compact(payload))
  os.replace(tmp, path)


def plot_best_so_far(payload: dict, path) -> str:
  """PNG of the mean (over seeds) best-so-far metric against the number of
  queries, one line per method, with a band of one standard error."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for method, data in payload["methods"].items():
    curves = np.array([r["trajectory"] for r in data["runs"]])
    x = np.arange(1, curves.shape[1] + 1)
    mean = curves.mean(axis=0)
    sem = curves.std(axis=0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else 0 * mean
    ax.plot(x, mean, label=f"{method} ({mean[-1]:.2f})", lw=1.6)
    ax.fill_between(x, mean - sem, mean + sem, alpha=0.2, lw=0)
  ax.axhline(payload["table_best_metric"], color="0.4", ls="--", lw=1, label="table best")
  lo = min(np.array([r["trajectory"] for r in d["runs"]]).mean(axis=0)[
      min(9, payload["queries"] - 1)] for d in payload["methods"].values())
  ax.set_ylim(lo - 0.1 * (payload["table_best_metric"] - lo), None)
  ax.set_xlabel("queries (distinct architectures looked up)")
  ax.set_ylabel(f"best {payload['metric']} so far (mean over {len(payload['seeds'])} seeds)")
  ax.set_title(f"NAS-Bench-201 table search, {os.path.basename(payload['table'])}")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  tmp = path + ".tmp"
  fig.savefig(tmp, format="png", facecolor="white")
  os.replace(tmp, path)
  return path


def run_from_config(config: ml_collections.ConfigDict, workdir) -> dict:
  """`config.mode = "tabular"`: compare `config.table.methods` on the table
  `config.table.path` (`metric`, `report`, `queries`, `seeds`). Writes
  WORKDIR/tabular_results.json (everything, as experiments/nb201_search.py
  --json), WORKDIR/summary.json (per-method statistics) and
  WORKDIR/plots/nb201_best_so_far.png; returns the summary. `config` is
  checked first (`config_check.check_config`, as `radars_jax.main` does):
  that check also says when the table block is missing."""
  from radars_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  t = config.table
  out = workdir_lib.prepare(workdir)
  payload = run_comparison(os.path.expanduser(str(t.path)), str(t.metric), str(t.report),
                           int(t.queries), int(t.seeds), t.methods,
                           progress=bool(config.progress_bar))
  write_payload(out / "tabular_results.json", payload)
  plot = plot_best_so_far(payload, out / "plots" / "nb201_best_so_far.png")
  summary = dict(
      mode="tabular", table=payload["table"], metric=payload["metric"],
      report=payload["report"], queries=payload["queries"], seeds=len(payload["seeds"]),
      table_best_metric=payload["table_best_metric"],
      table_best_report=payload["table_best_report"],
      methods=payload["summary"], plot=str(plot),
      results=str(out / "tabular_results.json"))
  workdir_lib.write_json(out / "summary.json", summary)
  return summary
