"""What a finished RADARS loop (`radars_jax.radars.loop`) writes: summary.json
(its keys are read by tests, the report and the docs), genotype.json,
history.json, the plots and the HTML report."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from radars_jax import distributed
from radars_jax import report
from radars_jax.report import page as report_page
from radars_jax.report import plots as report_plots
from radars_jax.nas import spaces as spaces_lib
from radars_jax import workdir as workdir_lib


def summary(search, state, record, model) -> dict:
  """The summary of `search` (a `radars.RadarsSearch`) ended with `state`,
  `record` and cost `model`."""
  final, best, runs = record.final, record.best, record.runs
  result = final if final is not None else best
  clock = search.time.clock_seconds()
  budget, space = search.budget, search.space
  # (the cost model estimates static programs: shared ones are left out)
  errors = [abs(r["estimated_bytes"] / r["compiled_bytes"] - 1.0) for r in runs
            if r.get("compiled_bytes") and not r.get("degenerate")
            and r.get("program", "static") == "static"]
  out = {
      "method": search.method, "mode": search.programs.searcher.mode, "space": space.name,
      "dataset": search.task.name, "seed": int(search.config.seed),
      "genotype": result["genotype"],
      # the final search's score (the best sample's without one): val_accuracy
      # for images (the task's `score_fields`)
      **{name: result[name] for name in search.task.score_fields},
      "performance_options": search.performance_options,
      "search_seconds": search.time.elapsed(),
      # from the start of the search to its first train step (None: the
      # whole space fit the budget, nothing was sampled)
      "first_train_step_seconds": record.first_train_step_seconds,
      # train-step compiles (some ahead, in the background) and the part of
      # them the loop waited for
      "compile_seconds": record.compiles.seconds,
      "compile_wait_seconds": record.compiles.wait_seconds,
      # each of them: what, compile seconds, seconds waited, bytes
      "compiles": record.compiles.records,
      # every program of the search: trace / lower / xla seconds
      "compile_breakdown_seconds": clock,
      "compile_total_seconds": sum(clock.values()),
      # the loop's own compiles (any program) and its waits for those
      # compiled in the background: the wall time compiling cost
      "compile_loop_seconds": (search.time.loop_clock_seconds()
                               + record.compiles.waited_ahead_seconds()),
      "step_bytes": int(max((r["compiled_bytes"] for r in runs), default=0)),
      "memory_budget_bytes": budget,
      "over_budget_steps": sum(1 for r in runs if budget and r["compiled_bytes"] > budget),
      # subspace runs on a shared program (one per k) / on their own
      "shared_program_runs": sum(1 for r in runs if r.get("program") == "shared"),
      "static_program_runs": sum(1 for r in runs if r.get("program", "static") == "static"),
      # |estimate / compiled - 1| over the subspaces run (degenerate ones,
      # whose estimate is only an upper bound, left out)
      "max_estimate_error": max(errors) if errors else None,
      "median_estimate_error": float(np.median(errors)) if errors else None,
      "iterations": record.iteration, "subspace_runs": runs,
      # the sampled subspaces' weights that started from trained ones
      # (the pool's, exact or inherited from similar ones)
      "pool_hit_ratio": pool_hit_ratio(runs),
      # (None when the whole space fit the budget: nothing was sampled)
      "best_sample": (None if best is None else
                      {k: v for k, v in best.items() if k != "genotype"}),
      "alive": state.alive.tolist(),
      "alive_ops_per_choice_point": state.alive.sum(-1).tolist(),
      "cost_model": {"slope": model.slope, "intercept": model.intercept,
                     "points": len(model.points)},
      "devices": int(search.mesh.devices.size),
      "choice_points": [cp.name for cp in space.choice_points],
      "space_ops": list(space.op_names),
  }
  if final is not None:
    out["subspace"] = final["subspace"]
    out["alphas"] = final["alphas"]
    out.update(spaces_lib.margin_summary(space, tuple(tuple(a) for a in final["subspace"]),
                                         [np.asarray(a) for a in final["alphas"]]))
  return out


def write_outputs(path: Path, summary_: dict, history: list) -> None:
  """genotype.json, history.json and summary.json in workdir `path`."""
  workdir_lib.write_json(path / "genotype.json", summary_["genotype"])
  workdir_lib.write_json(path / "history.json", {"iterations": history})
  workdir_lib.write_json(path / "summary.json", summary_)


def write_plots(path: Path, history: list, space: spaces_lib.SearchSpace,
                budget: float | None) -> None:
  """The loop's plots (rewards, alive ops, policy) in `path`/plots; a plot
  that fails is a warning, never the end of a search. (Process 0's only,
  in a run of several.)"""
  if not distributed.is_primary():
    return
  stub = {"choice_points": [cp.name for cp in space.choice_points],
          "space_ops": list(space.op_names), "memory_budget_bytes": budget}
  try:
    (path / "plots").mkdir(exist_ok=True)
    report_plots.plot_history(history, stub, path / "plots")
  except Exception as e:  # pylint: disable=broad-except  # a plot never stops a search
    print(f"radars_jax: warning: plots not written ({e})", flush=True)


def write_report(path: Path) -> None:
  report.write_report(path)


def copy_report_plots(path: Path, history: list, space: spaces_lib.SearchSpace,
                      budget: float | None) -> None:
  """The loop's plots in `path`/plots, as the report (`write_report`) drew
  them; drawn here where the report has none of them. (Process 0's only.)"""
  if not distributed.is_primary():
    return
  drawn = sorted((path / report_page.REPORT_DIR).glob("radars_*.png"))   # (plot_history's names)
  if not history or not drawn:
    write_plots(path, history, space, budget)
    return
  (path / "plots").mkdir(exist_ok=True)
  for png in drawn:
    shutil.copyfile(png, path / "plots" / png.name)


def pool_hit_ratio(runs: list) -> float | None:
  """Of the weights the sampled subspaces used, the fraction that started
  from trained ones (None before any sample)."""
  hits = sum(r.get("pool_hits") or 0 for r in runs)
  inherited = sum(sum((r.get("pool_inherited") or {}).values()) for r in runs)
  total = hits + inherited + sum(r.get("pool_misses") or 0 for r in runs)
  return (hits + inherited) / total if total else None
