"""What the report plots: the final alphas, the metric curves of
`metrics.jsonl` and the RADARS controller's history, one PNG each (or one
per metric prefix), returned as (path, caption) for the page."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from radars_jax.nas import spaces as spaces_lib
from radars_jax.report import heatmaps
from radars_jax.report import style

_PANEL_TITLES = {"normal": "Normal cell", "reduce": "Reduction cell",
                 "cell": "NAS-Bench-201 cell"}


def _col_names(summary: dict, num: int) -> list[str]:
  ops = summary.get("space_ops")
  if isinstance(ops, list) and len(ops) >= num:
    return [str(o) for o in ops[:num]] if len(ops) == num else [str(o) for o in ops]
  return [f"op {i}" for i in range(num)]


def _row_names(summary: dict, num: int) -> list[str]:
  names = summary.get("choice_points")
  if isinstance(names, list) and len(names) == num:
    return [str(n) for n in names]
  return [f"choice point {i}" for i in range(num)]


def _states_note(rows: Sequence[str]) -> str:
  if any(r.startswith(("normal/", "reduce/")) for r in rows):
    return "\nEdge a->b: from state a to state b; states 0, 1 = cell inputs $c_{k-2}$, $c_{k-1}$; 2-5 = nodes 0-3."
  return ""


def _choice_point_label(rows: Sequence[str]) -> str:
  """The y label of a heatmap with a row per choice point."""
  return "edge (source → target)" if any("->" in r for r in rows) else "choice point"


def _panel_grid(n: int) -> tuple[Figure, np.ndarray]:
  """A figure of `n` small panels, at most 3 a row: (figure, the n axes)."""
  ncols = min(3, n)
  nrows = math.ceil(n / ncols)
  fig = style.new_figure(4.6 * ncols + 0.3, 3.3 * nrows + 0.6)
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax in axes[n:]:
    ax.set_visible(False)
  return fig, axes[:n]


def _as_float(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return float("nan")


# --------------------------------------------------------------------------
# Alphas.


def plot_alphas(summary: dict, path: str | os.PathLike) -> Path | None:
  """softmax(alpha) over the active ops per choice point; None without alphas."""
  alphas = summary.get("alphas")
  if not isinstance(alphas, list) or not alphas:
    return None
  subspace = summary.get("subspace")
  if not isinstance(subspace, list) or len(subspace) != len(alphas):
    subspace = [list(range(len(a))) for a in alphas]
  num_ops = max([len(a) for a in alphas] + [max(s) + 1 for s in subspace if s])
  ops = summary.get("space_ops")
  if isinstance(ops, list) and len(ops) >= num_ops:
    num_ops = len(ops)
  values = np.full((len(alphas), num_ops), np.nan)
  for c, (active, alpha) in enumerate(zip(subspace, alphas)):
    if active and alpha is not None and len(alpha) == len(active):
      values[c, [int(i) for i in active]] = spaces_lib.softmax(alpha)
  rows = _row_names(summary, len(alphas))
  inactive = bool(np.isnan(values).any())
  note = ("Orange box: the strongest op of each choice point"
          + ("; grey: op not active in the final DNAS subspace." if inactive else ".")
          + _states_note(rows))
  active_counts = np.isfinite(values).sum(axis=1, keepdims=True)
  spread = np.nanmax(np.abs(values - 1.0 / np.maximum(active_counts, 1)))
  if np.isfinite(spread) and spread < 0.01:
    note += (f"\nEvery weight is within {spread:.1g} of uniform: the search has barely "
             "moved them yet, so the boxed ops are near ties.")
  return heatmaps.heatmap(
      Path(path), values, rows, _col_names(summary, num_ops),
      title="Architecture weights at the end of the search: softmax(α) over active ops",
      cbar_label="softmax(α)", xlabel="op", ylabel=_choice_point_label(rows),
      fmt=_alpha_format(values), mark_row_max=True, note=note, panel_titles=_PANEL_TITLES)


def _alpha_format(values: np.ndarray) -> str:
  """Two decimals, or three where the weights of most choice points are
  that close (a short search barely moves them from uniform), so that the
  boxed strongest op of a row shows a larger number than its neighbours."""
  gaps = []
  for row in values:
    row = np.sort(row[np.isfinite(row)])
    if row.size >= 2:
      gaps.append(row[-1] - row[-2])
  return "{:.3f}" if gaps and float(np.median(gaps)) < 0.005 else "{:.2f}"


# --------------------------------------------------------------------------
# Curves.


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "metrics"


def _ema(values: np.ndarray, span: float) -> np.ndarray:
  alpha = 2.0 / (span + 1.0)
  out = np.empty_like(values)
  acc = values[0]
  for i, v in enumerate(values):
    acc = alpha * v + (1 - alpha) * acc
    out[i] = acc
  return out


def _plot_curve(ax, name: str, steps: np.ndarray, vals: np.ndarray, legend: bool) -> None:
  """One metric on `ax`: a labelled point, a smoothed long series (a new
  segment at each restart of the step counter) or a plain line."""
  monotonic = bool(np.all(np.diff(steps) >= 0))
  x = steps if monotonic else np.arange(len(steps), dtype=float)
  colour = style.SERIES_COLOURS[0]
  if len(x) == 1:   # one record: a labelled point, mid-axis
    ax.plot(x, vals, "o", color=colour, markersize=7)
    ax.annotate(f"{vals[0]:.4g}", (x[0], vals[0]), xytext=(0, 9),
                textcoords="offset points", ha="center", fontsize=10)
    ax.set_xlim(x[0] - 1, x[0] + 1)
  elif len(x) > 60 and np.isfinite(vals).all():
    # Smoothed per run: a restart (step going back) starts a new segment.
    starts = [0] + [int(i) + 1 for i in np.flatnonzero(np.diff(steps) < 0)] + [len(x)]
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
      if k:
        ax.axvline(x[a] - 0.5, color="#999999", linestyle=":", linewidth=1.0)
      ax.plot(x[a:b], vals[a:b], color=colour, alpha=0.3, linewidth=1.0,
              label=None if k else "raw")
      ax.plot(x[a:b], _ema(vals[a:b], max(1.0, len(x) / 30)), color=colour,
              linewidth=2.0, label=None if k else "smoothed")
    if legend:
      ax.legend(loc="best", frameon=False)
  else:
    ax.plot(x, vals, color=colour, linewidth=1.8, marker="o" if len(x) <= 30 else None,
            markersize=4)
  ax.set_title(name)
  ax.set_xlabel("step" if monotonic else "record (dotted: step counter restarts)")
  ax.set_ylabel(name.rpartition("/")[2].replace("_", " "))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # steps: no 7.5
  ax.grid(alpha=0.3)
  finite = vals[np.isfinite(vals)]
  if finite.size and finite.min() > 0 and finite.max() / finite.min() > 1e3 \
      and "loss" in name:
    ax.set_yscale("log")


def plot_metrics(records: Sequence[tuple[int, str, float]], outdir: str | os.PathLike,
                 ) -> list[tuple[Path, str]]:
  """One PNG per metric prefix (`dnas/...` -> curves_dnas.png): [(png, caption)]."""
  groups: dict[str, dict[str, tuple[list, list]]] = {}
  for step, name, value in records:
    prefix, _, rest = name.partition("/")
    if not rest:
      prefix, rest = "metrics", name
    steps, vals = groups.setdefault(prefix, {}).setdefault(rest, ([], []))
    steps.append(step)
    vals.append(value)
  out = []
  for prefix, metrics in groups.items():
    path = Path(outdir) / f"curves_{_slug(prefix)}.png"
    fig, axes = _panel_grid(len(metrics))
    for i, (ax, (name, (steps, vals))) in enumerate(zip(axes, metrics.items())):
      _plot_curve(ax, name, np.asarray(steps, float), np.asarray(vals, float), legend=i == 0)
    fig.suptitle(f"{prefix} metrics", weight="bold")
    out.append((style.save_figure(fig, path),
                f"Metrics {', '.join(f'{prefix}/{m}' for m in metrics)} from metrics.jsonl."))
  return out


# --------------------------------------------------------------------------
# RADARS controller history.
def _plot_rewards(history: Sequence[dict], iters: np.ndarray,
                  outdir: Path) -> tuple[Path, str] | None:
  """Every sampled reward per iteration, their mean and max, the best so far."""
  rewards = [h.get("rewards") for h in history]
  best = np.array([_as_float(h.get("best_reward")) for h in history])
  has_rewards = any(isinstance(r, list) and r for r in rewards)
  if not (has_rewards or np.isfinite(best).any()):
    return None
  fig = style.new_figure(8.0, 4.6)
  ax = fig.subplots()
  mean = np.full(len(history), np.nan)
  top = np.full(len(history), np.nan)
  if has_rewards:
    xs, ys = [], []
    for i, r in enumerate(rewards):
      r = np.asarray([_as_float(v) for v in r], float) if isinstance(r, list) else np.array([])
      r = r[np.isfinite(r)]
      if r.size:
        mean[i], top[i] = r.mean(), r.max()
        xs += [iters[i]] * r.size
        ys += list(r)
    ax.scatter(xs, ys, s=12, color="#999999", alpha=0.6, label="sampled subspaces",
               zorder=1)
    few = len(iters) <= 40
    ax.plot(iters, mean, color=style.SERIES_COLOURS[0], marker="o" if few else None,
            markersize=4, linewidth=1.8, label="mean")
    ax.plot(iters, top, color=style.SERIES_COLOURS[1], marker="s" if few else None,
            markersize=4, linewidth=1.8, label="max")
  so_far = np.fmax(best, top)
  so_far = np.fmax.accumulate(np.where(np.isfinite(so_far), so_far, -np.inf))
  so_far[~np.isfinite(so_far)] = np.nan
  ax.step(iters, so_far, where="post", color=style.SERIES_COLOURS[2], linewidth=2.2,
          label="best so far")
  ax.set_xlabel("RADARS iteration")
  ax.set_ylabel("reward")
  ax.set_title("Controller rewards per iteration", weight="bold")
  ax.grid(alpha=0.3)
  ax.legend(loc="best", frameon=False)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  return (style.save_figure(fig, outdir / "radars_rewards.png"),
          "Rewards of the subspaces sampled in each RADARS iteration: every sample "
          "(grey), their mean and max, and the best reward so far.")


def _alive_counts(history: Sequence[dict]) -> tuple[np.ndarray, int] | None:
  """(alive ops per choice point and iteration, the most ops of a choice
  point); None where no iteration lists its alive ops."""
  alive = [h.get("alive") for h in history]
  if not any(isinstance(a, list) and a for a in alive):
    return None
  num_cp = max(len(a) for a in alive if isinstance(a, list))
  counts = np.full((num_cp, len(history)), np.nan)
  for i, a in enumerate(alive):
    if isinstance(a, list):
      for c, row in enumerate(a):
        if isinstance(row, list):
          counts[c, i] = sum(bool(v) for v in row)
  max_ops = max(len(row) for a in alive if isinstance(a, list) for row in a
                if isinstance(row, list))
  return counts, max_ops


def _plot_alive(counts: np.ndarray, max_ops: int, iters: np.ndarray, summary: dict,
                outdir: Path) -> tuple[Path, str]:
  labels = [str(int(v)) if float(v).is_integer() else str(v) for v in iters]
  return (heatmaps.heatmap(
      outdir / "radars_alive.png", counts, _row_names(summary, len(counts)), labels,
      title="Alive ops per choice point over RADARS iterations",
      cbar_label="alive ops", xlabel="RADARS iteration",
      ylabel="choice point", vmin=0, vmax=max_ops, fmt="{:.0f}", discrete=True,
      panel_titles=_PANEL_TITLES, max_xticks=25),
      "How many ops of each choice point the controller keeps alive, per iteration.")


def _plot_policy(history: Sequence[dict], summary: dict,
                 outdir: Path) -> tuple[Path, str] | None:
  """The controller's last probabilities, pruned ops grey; None without them."""
  probs = history[-1].get("policy_probs")
  if not (isinstance(probs, list) and probs and all(isinstance(p, list) for p in probs)):
    return None
  num_ops = max(len(p) for p in probs)
  values = np.full((len(probs), num_ops), np.nan)
  for c, p in enumerate(probs):
    values[c, :len(p)] = [_as_float(v) for v in p]
  last_alive = history[-1].get("alive")
  pruned = False
  if isinstance(last_alive, list) and len(last_alive) == len(probs):
    for c, row in enumerate(last_alive):
      if isinstance(row, list) and len(row) == num_ops:
        dead = ~np.asarray(row, bool)
        pruned |= bool(dead.any())
        values[c, dead] = np.nan
  rows = _row_names(summary, len(probs))
  note = "Orange box: the most probable op of each choice point"
  note += "; grey: op pruned (not alive)." if pruned else "."
  note += _states_note(rows)
  it = history[-1].get("iteration", len(history) - 1)
  return (heatmaps.heatmap(
      outdir / "radars_policy.png", values, rows, _col_names(summary, num_ops),
      title=f"Controller policy after RADARS iteration {it}",
      cbar_label="probability", xlabel="op", ylabel=_choice_point_label(rows),
      mark_row_max=True, note=note, panel_titles=_PANEL_TITLES),
      "Probabilities of the RADARS controller's policy at the last iteration.")


def _progress_series(history: Sequence[dict], counts: np.ndarray | None
                     ) -> dict[str, np.ndarray]:
  """Every other numeric per-iteration value (entropy, k, step memory, ...)
  and the total of alive ops, by name; series with no finite value left out."""
  skip = {"iteration", "best_reward", "rewards", "alive", "policy_probs"}
  series: dict[str, np.ndarray] = {}
  keys = [k for h in history for k in h if k not in skip]
  for key in dict.fromkeys(keys):
    vals = [h.get(key) for h in history]
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
           for v in vals):
      series[key] = np.array([_as_float(v) for v in vals])
  if counts is not None:
    series["alive ops (all choice points)"] = np.nansum(counts, axis=0)
  return {k: v for k, v in series.items() if np.isfinite(v).any()}


def _plot_progress(series: dict[str, np.ndarray], iters: np.ndarray, summary: dict,
                   outdir: Path) -> tuple[Path, str]:
  """A panel per series; memory in GB against the budget's line."""
  fig, axes = _panel_grid(len(series))
  budget = summary.get("memory_budget_bytes")
  for ax, (key, vals) in zip(axes, series.items()):
    label = key.replace("_", " ")
    if key.endswith("_bytes"):
      vals = vals / style.GB
      label = label[:-len(" bytes")] + " memory (GB)"
      if isinstance(budget, (int, float)) and budget > 0:
        ax.axhline(budget / style.GB, color=style.SERIES_COLOURS[1], linestyle="--",
                   linewidth=1.5, label="memory budget")
        ax.legend(loc="best", frameon=False)
    ax.plot(iters, vals, color=style.SERIES_COLOURS[0],
            marker="o" if len(iters) <= 30 else None, markersize=4, linewidth=1.8)
    ax.set_title(label)
    ax.set_xlabel("RADARS iteration")
    ax.set_ylabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = vals[np.isfinite(vals)]
    if finite.size and np.all(finite == np.round(finite)):
      ax.yaxis.set_major_locator(MaxNLocator(integer=True))
      if finite.min() == finite.max():   # a constant: show it mid-axis
        ax.set_ylim(finite[0] - 1, finite[0] + 1)
    ax.grid(alpha=0.3)
  fig.suptitle("RADARS iterations", weight="bold")
  return (style.save_figure(fig, outdir / "radars_progress.png"),
          f"Per RADARS iteration: {', '.join(k.replace('_', ' ') for k in series)}.")


def plot_history(history: Sequence[dict], summary: dict | None,
                 outdir: str | os.PathLike) -> list[tuple[Path, str]]:
  """RADARS iterations: rewards, alive ops, final policy, other scalars."""
  outdir = Path(outdir)
  summary = summary or {}
  out = []
  if not history:   # (the whole space fit the budget: no iteration ran)
    return out
  iters = np.array([_as_float(h.get("iteration", i)) for i, h in enumerate(history)])
  out.append(_plot_rewards(history, iters, outdir))
  alive = _alive_counts(history)
  if alive is not None:
    out.append(_plot_alive(*alive, iters, summary, outdir))
  out.append(_plot_policy(history, summary, outdir))
  series = _progress_series(history, alive[0] if alive is not None else None)
  if series:
    out.append(_plot_progress(series, iters, summary, outdir))
  return [item for item in out if item is not None]


# --------------------------------------------------------------------------
# Agents (task=agents).

_AGENT_LABELS = {"teacher": "teacher (hand-designed)", "small": "small hand-designed",
                 "dnas": "plain DNAS", "a2d": "A2D (distilled)",
                 "a2d_plain": "A2D cell, retrained without distillation",
                 "radars": "RADARS with A2D (distilled)"}


def plot_agents(summary: dict, path: str | os.PathLike) -> Path | None:
  """Mean return (+- std over the evaluation episodes) against multiply-adds
  of every agent of an A2D run; None for other runs."""
  agents = summary.get("agents")
  if not isinstance(agents, dict) or not agents:
    return None
  fig = style.new_figure(9.0, 4.2)
  ax = fig.subplots()
  markers = "o^sDv"
  for i, (name, agent) in enumerate(agents.items()):
    ax.errorbar([_as_float(agent.get("macs"))], [_as_float(agent.get("mean_return"))],
                yerr=[_as_float(agent.get("std_return"))], fmt=markers[i % len(markers)],
                capsize=3, color=style.SERIES_COLOURS[i % len(style.SERIES_COLOURS)],
                label=_AGENT_LABELS.get(name, name))
  ax.set_xscale("log")
  ax.set_xlabel("multiply-adds per observation (log scale)")
  ax.set_ylabel(f"mean return over {next(iter(agents.values())).get('episodes', '?')} episodes")
  ax.set_title(f"Agents on {summary.get('env', '?')}: return against cost", weight="bold")
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
  return style.save_figure(fig, Path(path))
