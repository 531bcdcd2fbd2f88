"""What each FNAS part buys, on the NAS-Bench-201 tables (search by look-up).

    python experiments/fnas_ablation.py --json experiments/results/fnas_ablation.json \\
        --plot experiments/results/fnas_ablation.png

The RADARS PPO controller (k = 1, `radars_jax.tabular.strategies.run_ppo`)
with FNAS's three parts switched on one at a time:
  plain          the critic as a plain baseline (`uncertainty=none`), no
                 replayed samples (`replay_weight=0`);
  +uncertainty   the critic ensemble's spread scales each advantage
                 (`uncertainty=scale_advantage`);
  +replay        replayed samples with the truncated importance correction
                 (`replay_weight=0.5`, `importance_clip=1`);
  +transfer      plain, started from the critic and policy of the same
                 controller after `--transfer-queries` queries on the other
                 table (`radars_jax.radars.knowledge`);
  all            the three together (the library's defaults plus transfer);
and, for reference, regularized evolution and random search. Each runs
`--seeds` times for `--queries` queries on each task: CIFAR-10 (transfer
from CIFAR-100) and CIFAR-100 (from CIFAR-10), both at their `-val` column.
Reported per task and method: the mean best metric after 25, 50, 100, 200
and `--queries` queries; the queries needed to reach the table's top 0.1%
(the metric of its 16th best cell): how many runs reach it and the median
over runs (a run that never does counts as more than `--queries`); the
speed-up as FNAS states it, plain's median queries over each variant's.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TASKS = {"cifar10": ("nb201_cifar10.csv", "cifar10-val", "cifar10-test"),
         "cifar100": ("nb201_cifar100.csv", "cifar100-val", "cifar100-test")}
OTHER = {"cifar10": "cifar100", "cifar100": "cifar10"}
VARIANTS = {   # controller fields over `tabular_controller_config()`, and transfer
    "plain": ({"uncertainty": "none", "replay_weight": 0.0}, False),
    "+uncertainty": ({"uncertainty": "scale_advantage", "replay_weight": 0.0}, False),
    "+replay": ({"uncertainty": "none", "replay_weight": 0.5}, False),
    "+transfer": ({"uncertainty": "none", "replay_weight": 0.0}, True),
    "all": ({"uncertainty": "scale_advantage", "replay_weight": 0.5}, True),
}
CHECKPOINTS = (25, 50, 100, 200)
TOP_FRACTION = 0.001


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--tasks", default="cifar10,cifar100")
  ap.add_argument("--data-dir", default=str(SHARED), help="where the two NB-201 CSVs are")
  ap.add_argument("--queries", type=int, default=300)
  ap.add_argument("--transfer-queries", type=int, default=300)
  ap.add_argument("--seeds", type=int, default=30)
  ap.add_argument("--variants", default=",".join(VARIANTS) + ",evolution,random")
  ap.add_argument("--json", default=None)
  ap.add_argument("--plot", default=None)
  return ap.parse_args(argv)


def queries_to_reach(trajectory, target: float) -> int | None:
  """1-based index of the first query whose best-so-far reaches `target`."""
  hits = np.nonzero(np.asarray(trajectory) >= target - 1e-9)[0]
  return int(hits[0]) + 1 if len(hits) else None


def median_queries(counts: list[int | None], queries: int) -> float:
  """Median over runs, a run that never reached counting as infinite."""
  values = sorted(math.inf if c is None else c for c in counts)
  median = float(np.median(values)) if not math.isinf(values[len(values) // 2]) else math.inf
  return median if median <= queries else math.inf


def run_variant(name: str, task: str, args, tables: dict) -> list[list[float]]:
  from radars_jax.tabular import strategies  # pylint: disable=import-outside-toplevel
  table = tables[task]
  if name in ("evolution", "random"):
    return [strategies.run_strategy(name, table, args.queries, seed).trajectory
            for seed in range(args.seeds)]
  fields, transfer = VARIANTS[name]
  config = strategies.tabular_controller_config()
  config.update(fields)
  source = strategies.TransferSource(tables[OTHER[task]], args.transfer_queries)
  return [(strategies.search_ppo_transfer(table, args.queries, seed, source, config) if transfer
           else strategies.search_ppo(table, args.queries, seed, config)).trajectory
          for seed in range(args.seeds)]


def summarise(curves: list[list[float]], target: float, queries: int) -> dict:
  arr = np.asarray(curves)
  reach = [queries_to_reach(c, target) for c in curves]
  return {"mean_best_at": {str(q): float(arr[:, q - 1].mean())
                           for q in (*CHECKPOINTS, queries) if q <= queries},
          "std_best_at_end": float(arr[:, -1].std(ddof=1)) if len(arr) > 1 else 0.0,
          "reached_top": sum(r is not None for r in reach), "runs": len(reach),
          "median_queries_to_top": median_queries(reach, queries),
          "queries_to_top": reach, "mean_curve": arr.mean(0).round(4).tolist()}


def main(argv=None) -> dict:
  args = parse_args(argv)
  from radars_jax.tabular import table as table_lib  # pylint: disable=import-outside-toplevel
  tasks = [t for t in args.tasks.split(",") if t]
  tables = {name: table_lib.load_table(str(Path(args.data_dir) / path), metric, report)
            for name, (path, metric, report) in TASKS.items()}
  result = {"queries": args.queries, "transfer_queries": args.transfer_queries,
            "seeds": args.seeds, "top_fraction": TOP_FRACTION, "variants": {
                n: {"controller": f, "transfer": t} for n, (f, t) in VARIANTS.items()},
            "tasks": {}}
  for task in tasks:
    values = tables[task].metric_values
    ranked = np.sort(values[~np.isnan(values)])[::-1]
    target = float(ranked[max(int(len(ranked) * TOP_FRACTION), 1) - 1])
    out = {"metric": tables[task].metric, "target": target, "table_best": float(ranked[0]),
           "methods": {}}
    for name in args.variants.split(","):
      start = time.perf_counter()
      summary = summarise(run_variant(name, task, args, tables), target, args.queries)
      summary["seconds"] = time.perf_counter() - start
      out["methods"][name] = summary
      print(f"{task} {name:13s} best@100 {summary['mean_best_at'].get('100', float('nan')):.3f}"
            f"  best@{args.queries} {summary['mean_best_at'][str(args.queries)]:.3f}  top 0.1% "
            f"{summary['reached_top']}/{summary['runs']} runs, median "
            f"{summary['median_queries_to_top']} queries  ({summary['seconds']:.0f} s)",
            flush=True)
    plain = out["methods"].get("plain", {}).get("median_queries_to_top")
    for summary in out["methods"].values():
      mine = summary["median_queries_to_top"]
      summary["speedup_vs_plain"] = (plain / mine if plain and not math.isinf(plain)
                                     and not math.isinf(mine) else None)
    result["tasks"][task] = out
    if args.json:
      write_json(args.json, result)
  print(table_text(result))
  if args.plot:
    plot(result, args.plot)
  return result


def write_json(path: str, result: dict) -> None:
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(result, indent=1, default=lambda x: None if x is math.inf else x)
  Path(path).write_text(text.replace("Infinity", "null") + "\n")


def table_text(result: dict) -> str:
  lines = []
  for task, out in result["tasks"].items():
    lines.append(f"\n{task} ({out['metric']}; top 0.1% = {out['target']:.3f}, "
                 f"best {out['table_best']:.3f}; {result['seeds']} seeds)")
    qs = list(next(iter(out["methods"].values()))["mean_best_at"])
    lines.append(f"{'method':14s}" + "".join(f"{'@' + q:>9s}" for q in qs)
                 + f"{'top':>8s}{'median q':>10s}{'speed-up':>9s}")
    for name, s in out["methods"].items():
      speed = f"{s['speedup_vs_plain']:.2f}" if s.get("speedup_vs_plain") else "-"
      lines.append(f"{name:14s}" + "".join(f"{s['mean_best_at'][q]:9.3f}" for q in qs)
                   + f"{s['reached_top']:>5d}/{s['runs']:<2d}"
                   + f"{s['median_queries_to_top']:>10}{speed:>9s}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  tasks = list(result["tasks"])
  fig = Figure(figsize=(6 * len(tasks), 4.2))
  FigureCanvasAgg(fig)
  for i, task in enumerate(tasks):
    ax = fig.add_subplot(1, len(tasks), i + 1)
    out = result["tasks"][task]
    for name, s in out["methods"].items():
      curve = s["mean_curve"]
      ax.plot(range(1, len(curve) + 1), curve, label=name)
    ax.axhline(out["target"], color="grey", linestyle=":", label="top 0.1%")
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel(f"mean best {out['metric']}")
    low = min(s["mean_best_at"]["25"] for s in out["methods"].values())
    ax.set_ylim(low - 0.5, out["table_best"] + 0.2)
    ax.set_title(f"{task}: {result['seeds']} seeds")
    ax.legend(fontsize=8)
  fig.tight_layout()
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, str(ROOT))
  main()
