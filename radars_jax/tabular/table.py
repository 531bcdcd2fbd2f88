"""NAS-Bench-201 cells and their table: arch strings, indices, the table of
metric values, and the query budget every search strategy spends.

A NAS-Bench-201 cell has 6 edges, each one of 5 ops. Op indices follow
`NB201_OPS`; edges follow their order in an arch string
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: (1<-0), (2<-0), (2<-1), (3<-0),
(3<-1), (3<-2). An architecture's index in a `Table` is its op indices read
as a base-5 number, first edge most significant.

A *query* is one DISTINCT architecture looked up (`QueryBudget`); looking up
an architecture again is free (cached) and still gives its value. A search
ends with a `SearchResult`: the best queried architecture by the search
metric, with its report value.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import time

import numpy as np

from radars_jax.errors import UserError

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node)
NUM_EDGES = len(NB201_EDGES)
NUM_OPS = len(NB201_OPS)
NUM_ARCHS = NUM_OPS ** NUM_EDGES


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


def search_result(method: str, seed: int, budget: QueryBudget, start: float) -> SearchResult:
  """The `SearchResult` of a search that spent `budget`, started at
  `time.time()` = `start`: the best queried cell and the best-so-far curve."""
  values = np.array([budget.queried[i] for i in budget.order])
  best = budget.order[int(np.argmax(values))]
  return SearchResult(
      method=method, seed=seed, queries=budget.used, samples=budget.lookups,
      best_arch=arch_str_from_ops(ops_from_index(best)),
      best_metric=float(budget.table.metric_values[best]),
      best_report=float(budget.table.report_values[best]),
      trajectory=np.maximum.accumulate(values).tolist(),
      seconds=time.time() - start)


def check_search(table: Table, queries: int) -> None:
  """UserError unless `table` has every cell and `queries` is a budget it
  can meet (1 to NUM_ARCHS): what every strategy and comparison needs."""
  if table.num_present != NUM_ARCHS:
    raise UserError(f"table {table.path} has {table.num_present} of the {NUM_ARCHS} "
                    "NAS-Bench-201 cells; a search needs all of them")
  if not 1 <= queries <= NUM_ARCHS:
    raise UserError(f"--queries={queries} must be between 1 and {NUM_ARCHS}")

