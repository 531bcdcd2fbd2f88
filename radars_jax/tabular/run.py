"""Comparing strategies at equal query budgets and writing what they found:
`experiments/nb201_search.py` (`run_comparison`, `write_payload`,
`plot_best_so_far`, `format_summary`) and `config.mode = "tabular"`
(`run_from_config`) both run this.

A comparison runs every chosen strategy once per seed on one table, then
reports per method the mean and standard deviation over seeds of the best
metric found and of its report value, and the mean best-so-far curve.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from radars_jax import metrics
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from radars_jax.tabular import strategies
from radars_jax.tabular.table import SearchResult, Table, check_search, load_table

def compare(table: Table, methods, queries: int, seeds: int, progress: bool = False,
            transfer: strategies.TransferSource | None = None) -> dict[str, list[SearchResult]]:
  """Every method in `methods` once per seed 0..seeds-1, each with a budget
  of `queries` distinct architectures (`ppo_transfer` from `transfer`)."""
  methods = strategies.parse_methods(methods)
  check_search(table, queries)
  if int(seeds) < 1:
    raise UserError(f"--seeds={seeds} must be at least 1")
  results: dict[str, list[SearchResult]] = {m: [] for m in methods}
  with metrics.progress_bar(len(methods) * int(seeds), "nb201 search", enabled=progress,
                            unit="run") as bar:
    for method in methods:
      bar.set_postfix_str(method)
      for seed in range(int(seeds)):
        results[method].append(strategies.run_strategy(method, table, queries, seed,
                                                       transfer=transfer))
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


def comparison_payload(table: Table, queries: int, results: dict[str, list[SearchResult]],
                       transfer: strategies.TransferSource | None = None) -> dict:
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
      ppo_controller=strategies.tabular_controller_config().to_dict(),
      transfer=None if transfer is None else dict(
          table=os.path.abspath(transfer.table.path), metric=transfer.table.metric,
          queries=int(transfer.queries), policy=bool(transfer.policy)),
      summary=summary, methods=methods)


def run_comparison(path: str, metric: str, report: str, queries: int, seeds: int,
                   methods=strategies.METHODS, progress: bool = False,
                   transfer_path: str | None = None, transfer_metric: str | None = None,
                   transfer_queries: int | None = None) -> dict:
  """Load the table (and the transfer table, if any), run `compare`,
  return `comparison_payload`."""
  table = load_table(path, metric, report)
  transfer = None
  if transfer_path is not None:
    source = load_table(transfer_path, transfer_metric or metric, transfer_metric or metric)
    transfer = strategies.TransferSource(source, int(transfer_queries or queries))
  elif "ppo_transfer" in strategies.parse_methods(methods):
    raise UserError(strategies.NO_TRANSFER_SOURCE)
  return comparison_payload(table, queries,
                            compare(table, methods, queries, seeds, progress, transfer),
                            transfer)


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
  t = config.table
  out = workdir_lib.prepare(workdir)
  payload = run_comparison(os.path.expanduser(str(t.path)), str(t.metric), str(t.report),
                           int(t.queries), int(t.seeds), t.methods,
                           progress=bool(config.progress_bar),
                           transfer_path=(None if t.get("transfer_path") is None
                                          else os.path.expanduser(str(t.transfer_path))),
                           transfer_metric=t.get("transfer_metric"),
                           transfer_queries=t.get("transfer_queries"))
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
