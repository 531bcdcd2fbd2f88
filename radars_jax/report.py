"""A report of a workdir: cell drawings, alpha heatmaps, curves, one HTML page.

    python -m radars_jax.report WORKDIR      # prints WORKDIR/report/index.html

`write_report(workdir)` (called at the end of every search and training)
writes `WORKDIR/report/`:

- `cell_normal.png`, `cell_reduce.png` (DARTS genotype) or `cell.png`
  (NAS-Bench-201): the found cell, edges labelled with their op and coloured
  by op family (convolution / pooling / skip / none).
- `alphas.png`: softmax(alpha) over the active ops of each choice point at
  the end of the search (rows: choice points; columns: the space's ops).
- `curves_<prefix>.png`: one figure per metric prefix of `metrics.jsonl`
  (`dnas/...`, `train/...`, ...), one panel per metric.
- RADARS, from `history.json`: `radars_rewards.png` (reward per iteration),
  `radars_alive.png` (alive ops per choice point and iteration),
  `radars_policy.png` (final controller probabilities), `radars_progress.png`
  (entropy, k, step memory, ... per iteration).
- `index.html`: the summary and evaluation scalars, the genotype as text and
  every picture with a caption (relative links: the folder can be moved).

Only what the workdir holds is drawn; a missing optional file is skipped and
a picture that cannot be drawn from malformed data is listed on the page
instead of failing the run. A workdir with neither `summary.json` (search)
nor `eval.json` (training) is a `UserError`.

Rendering uses matplotlib's Agg canvas directly (`Figure` objects, no
pyplot): nothing is shown on screen, no global figure is left open and the
backend of a notebook that calls `write_report` is left as it was.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import logging
import math
import textwrap
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import matplotlib
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

from radars_jax import memory as memory_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.errors import UserError

REPORT_DIR = "report"
DPI = 150
_GB = 1e9

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
FAMILY_COLOURS = {
    "conv": "#0072B2",   # blue
    "pool": "#E69F00",   # orange
    "skip": "#009E73",   # bluish green
    "none": "#999999",   # grey, dashed
    "other": "#CC79A7",  # reddish purple
}
FAMILY_NAMES = {"conv": "convolution", "pool": "pooling", "skip": "skip / identity",
                "none": "none (zero)", "other": "other"}
_SERIES_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_CMAP = "viridis"
_STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10,
    "figure.titlesize": 14, "axes.spines.top": False, "axes.spines.right": False,
}

log = logging.getLogger(__name__)


def op_family(op: str) -> str:
  """"conv", "pool", "skip", "none" or "other": what an edge is coloured by."""
  op = str(op)
  if op in ("none", "zero", "zeroize"):
    return "none"
  if "skip" in op or op in ("identity", "skip_connect"):
    return "skip"
  if "pool" in op:
    return "pool"
  if "conv" in op:
    return "conv"
  return "other"


# --------------------------------------------------------------------------
# Reading the workdir.


@dataclasses.dataclass
class WorkdirData:
  """What a workdir holds; None (or empty) for what it does not."""
  path: Path
  summary: dict | None = None
  eval: dict | None = None
  genotype: dict | None = None
  history: list | None = None
  metrics: list = dataclasses.field(default_factory=list)  # (step, name, value)
  problems: list = dataclasses.field(default_factory=list)  # for the page


def _read_json(path: Path, required: bool, problems: list):
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    message = f"cannot read {path.name}: {e}"
    if required:
      raise UserError(f"{path}: {message}") from None
    problems.append(message)
    return None


def _read_metrics(path: Path, problems: list) -> list:
  records, bad = [], 0
  try:
    lines = path.read_text().splitlines()
  except FileNotFoundError:
    return []
  except OSError as e:
    problems.append(f"cannot read {path.name}: {e}")
    return []
  for line in lines:
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      records.append((int(record["step"]), str(record["name"]), float(record["value"])))
    except (ValueError, KeyError, TypeError):
      bad += 1  # a line cut short by a killed run, most often the last
  if bad:
    problems.append(f"{path.name}: skipped {bad} unreadable line(s)")
  return records


def load_workdir(workdir: str | os.PathLike) -> WorkdirData:
  """Reads the files of a search or training workdir (UserError if neither)."""
  path = Path(workdir).expanduser()
  if not path.is_dir():
    raise UserError(f"workdir {str(path)!r} does not exist or is not a directory")
  data = WorkdirData(path=path)
  data.summary = _read_json(path / "summary.json", True, data.problems)
  data.eval = _read_json(path / "eval.json", True, data.problems)
  if data.summary is None and data.eval is None:
    raise UserError(f"{str(path)!r} has no summary.json or eval.json: "
                    "not the workdir of a finished search or training")
  for name in ("summary", "eval"):
    if getattr(data, name) is not None and not isinstance(getattr(data, name), dict):
      raise UserError(f"{path / (name + '.json')}: expected a JSON object")
  genotype = _read_json(path / "genotype.json", False, data.problems)
  for candidate in (genotype, (data.summary or {}).get("genotype"),
                    (data.eval or {}).get("genotype")):
    if isinstance(candidate, dict):
      data.genotype = candidate
      break
  history = _read_json(path / "history.json", False, data.problems)
  if isinstance(history, dict) and isinstance(history.get("iterations"), list):
    history = history["iterations"]
  if history is not None and not isinstance(history, list):
    data.problems.append("history.json: expected a list of per-iteration objects")
    history = None
  data.history = [h for h in history if isinstance(h, dict)] if history else None
  data.metrics = _read_metrics(path / "metrics.jsonl", data.problems)
  return data


# --------------------------------------------------------------------------
# Small helpers.


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
  if layout == "constrained":
    fig.get_layout_engine().set(w_pad=0.12, h_pad=0.12)   # inches of margin
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: Path) -> Path:
  """Writes a PNG atomically (a reader never sees half a file)."""
  tmp = path.with_name(path.name + ".tmp")
  fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
  os.replace(tmp, path)
  fig.clear()
  return path


_TEXT_CACHE: dict = {}


def _text_size(text: str, fontsize: float, **kwargs) -> tuple[float, float]:
  """(width, height) in inches of `text` as rendered."""
  key = (text, fontsize, tuple(sorted(kwargs.items())))
  if key not in _TEXT_CACHE:
    fig = _new_figure(1, 1, layout=None)
    artist = fig.text(0, 0, text, fontsize=fontsize, **kwargs)
    box = artist.get_window_extent(fig.canvas.get_renderer())
    _TEXT_CACHE[key] = (box.width / DPI, box.height / DPI)
  return _TEXT_CACHE[key]


def _luminance(rgba) -> float:
  r, g, b = rgba[:3]
  return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "metrics"


# --------------------------------------------------------------------------
# Cell drawings: nodes at fixed places, edges as quadratic Bezier curves bent
# around nodes, labels placed along their edge where they overlap least.

_LABEL_FONT = 10
_NODE_FONT = 12
_NODE_FILL = {"input": "#D6E6F4", "node": "#F2F2F2", "output": "#FBE3C0"}


@dataclasses.dataclass
class _Node:
  key: Any
  label: str
  x: float
  y: float
  kind: str            # input / node / output
  hw: float = 0.35     # half width and height, inches
  hh: float = 0.24


@dataclasses.dataclass
class _Edge:
  src: Any
  dst: Any
  op: str | None       # None: an unlabelled edge (into the cell output)
  pts: np.ndarray | None = None
  label_box: tuple | None = None   # (cx, cy, half w, half h)


def _bezier(p0, p2, rad: float, n: int = 160) -> np.ndarray:
  p0, p2 = np.asarray(p0, float), np.asarray(p2, float)
  d = p2 - p0
  c = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
  t = np.linspace(0.0, 1.0, n)[:, None]
  return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t ** 2 * p2


def _in_box(pts: np.ndarray, cx, cy, hw, hh) -> np.ndarray:
  return (np.abs(pts[:, 0] - cx) <= hw) & (np.abs(pts[:, 1] - cy) <= hh)


def _route(nodes: dict, edges: list) -> None:
  """Chooses a bend per edge: straight where it passes no node and runs
  along no other edge, else the least bent curve that does not."""
  placed = []
  order = sorted(edges, key=lambda e: (e.op is None, math.dist(
      (nodes[e.src].x, nodes[e.src].y), (nodes[e.dst].x, nodes[e.dst].y))))
  for edge in order:
    a, b = nodes[edge.src], nodes[edge.dst]
    best = None
    for rad in (0.0, 0.12, -0.12, 0.22, -0.22, 0.32, -0.32, 0.42, -0.42, 0.55, -0.55):
      pts = _bezier((a.x, a.y), (b.x, b.y), rad)
      keep = ~_in_box(pts, a.x, a.y, a.hw + 0.03, a.hh + 0.03) & \
             ~_in_box(pts, b.x, b.y, b.hw + 0.03, b.hh + 0.03)
      idx = np.flatnonzero(keep)
      if idx.size < 2:
        continue
      pts = pts[idx[0]:idx[-1] + 1]
      cost = 12.0 * abs(rad)
      for n in nodes.values():
        if n.key not in (edge.src, edge.dst):
          cost += 1000.0 * _in_box(pts, n.x, n.y, n.hw + 0.15, n.hh + 0.15).sum()
      far = (np.hypot(pts[:, 0] - a.x, pts[:, 1] - a.y) > 0.8) & \
            (np.hypot(pts[:, 0] - b.x, pts[:, 1] - b.y) > 0.8)
      for other in placed:
        dist = np.hypot(pts[far, None, 0] - other[None, :, 0],
                        pts[far, None, 1] - other[None, :, 1]).min(axis=1)
        cost += 1.0 * (dist < 0.15).sum()
      if best is None or cost < best[0]:
        best = (cost, pts)
    edge.pts = best[1]
    placed.append(best[1])


def _overlap(b1, b2) -> float:
  """Overlap area of two (cx, cy, hw, hh) boxes."""
  dx = min(b1[0] + b1[2], b2[0] + b2[2]) - max(b1[0] - b1[2], b2[0] - b2[2])
  dy = min(b1[1] + b1[3], b2[1] + b2[3]) - max(b1[1] - b1[3], b2[1] - b2[3])
  return max(dx, 0.0) * max(dy, 0.0)


def _place_labels(nodes: dict, edges: list) -> None:
  """Puts each op label on its edge where it covers the fewest other labels,
  nodes and edges, as near the middle of the edge as that allows."""
  labelled = [e for e in edges if e.op is not None]
  labelled.sort(key=lambda e: len(e.pts))
  placed = []
  node_boxes = [(n.x, n.y, n.hw + 0.04, n.hh + 0.04) for n in nodes.values()]
  for edge in labelled:
    w, h = _text_size(edge.op, _LABEL_FONT)
    hw, hh = w / 2 + 0.07, h / 2 + 0.05
    length = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(edge.pts, axis=0).T))])
    best = None
    for t in sorted(np.linspace(0.18, 0.82, 17), key=lambda t: abs(t - 0.5)):
      i = int(np.searchsorted(length, t * length[-1]))
      i = min(i, len(edge.pts) - 1)
      box = (edge.pts[i, 0], edge.pts[i, 1], hw, hh)
      grown = (box[0], box[1], hw + 0.1, hh + 0.06)
      cost = 4.0 * abs(t - 0.5)
      cost += 1e4 * sum(_overlap(grown, other) for other in placed)
      cost += 1e4 * sum(_overlap(box, nb) for nb in node_boxes)
      for other in edges:
        if other is not edge:
          cost += 1.0 * _in_box(other.pts, *box).sum()
      if best is None or cost < best[0]:
        best = (cost, box)
    edge.label_box = best[1]
    placed.append(best[1])


def _draw_graph(nodes: dict, edges: list, path: Path, title: str,
                subtitle: str | None = None) -> Path:
  """Draws a laid-out cell; 1 data unit = 1 inch, so text sizes are known."""
  for n in nodes.values():
    w, _ = _text_size(n.label, _NODE_FONT)
    n.hw = max(n.hw, w / 2 + 0.16)
  _route(nodes, edges)
  _place_labels(nodes, edges)

  boxes = [(n.x, n.y, n.hw, n.hh) for n in nodes.values()]
  boxes += [e.label_box for e in edges if e.label_box is not None]
  xs = [b[0] - b[2] for b in boxes] + [b[0] + b[2] for b in boxes]
  ys = [b[1] - b[3] for b in boxes] + [b[1] + b[3] for b in boxes]
  for e in edges:
    xs += [e.pts[:, 0].min(), e.pts[:, 0].max()]
    ys += [e.pts[:, 1].min(), e.pts[:, 1].max()]
  pad = 0.15
  x0, x1 = min(xs) - pad, max(xs) + pad
  y0, y1 = min(ys) - pad, max(ys) + pad
  families = sorted({op_family(e.op) for e in edges if e.op is not None},
                    key=list(FAMILY_COLOURS).index)
  title_w, _ = _text_size(title, 14, weight="bold")
  sub_w, sub_h = _text_size(subtitle, 10, linespacing=1.5) if subtitle else (0.0, 0.0)
  legend_w = sum(_text_size(FAMILY_NAMES[f], 10)[0] + 0.9 for f in families)
  min_w = max(title_w, sub_w, legend_w) + 0.3
  if x1 - x0 < min_w:
    grow = (min_w - (x1 - x0)) / 2
    x0, x1 = x0 - grow, x1 + grow
  top = 0.5 + (sub_h + 0.15 if subtitle else 0.0)
  bottom = 0.55 if families else 0.1
  width, height = x1 - x0, y1 - y0 + top + bottom
  fig = _new_figure(width, height, layout=None)
  ax = fig.add_axes((0, bottom / height, 1, (y1 - y0) / height))
  ax.set_xlim(x0, x1)
  ax.set_ylim(y0, y1)
  ax.set_axis_off()

  for e in edges:
    if e.op is None:
      colour, style, lw, z = "#6E6E6E", "-", 1.3, 1
    else:
      family = op_family(e.op)
      colour, lw, z = FAMILY_COLOURS[family], 2.0, 2
      style = "--" if family == "none" else "-"
    ax.add_patch(FancyArrowPatch(
        path=MplPath(e.pts), arrowstyle="-|>", mutation_scale=16, color=colour,
        linewidth=lw, linestyle=style, zorder=z, shrinkA=0, shrinkB=0))
  for e in edges:
    if e.label_box is None:
      continue
    colour = FAMILY_COLOURS[op_family(e.op)]
    ax.text(e.label_box[0], e.label_box[1], e.op, fontsize=_LABEL_FONT, ha="center",
            va="center", zorder=4, color="#202020",
            bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=colour,
                      linewidth=1.2))
  for n in nodes.values():
    ax.add_patch(FancyBboxPatch(
        (n.x - n.hw, n.y - n.hh), 2 * n.hw, 2 * n.hh,
        boxstyle="round,pad=0,rounding_size=0.12", facecolor=_NODE_FILL[n.kind],
        edgecolor="#303030", linewidth=1.4, zorder=5))
    ax.text(n.x, n.y, n.label, fontsize=_NODE_FONT, ha="center", va="center", zorder=6)

  fig.text(0.5, 1 - 0.28 / height, title, ha="center", va="center", fontsize=14,
           weight="bold")
  if subtitle:
    fig.text(0.5, 1 - 0.48 / height, subtitle, ha="center", va="top", fontsize=10,
             color="#404040", linespacing=1.5)
  if families:
    handles = [Line2D([0], [0], color=FAMILY_COLOURS[f], lw=2.5,
                      linestyle="--" if f == "none" else "-") for f in families]
    fig.legend(handles, [FAMILY_NAMES[f] for f in families], loc="lower center",
               bbox_to_anchor=(0.5, 0.02 / height), ncol=len(families), frameon=False,
               fontsize=10, handlelength=2.2)
  return _save(fig, path)


_XGAP_MIN = 2.3   # inches between node layers: room for a label and its arrows
_YGAP = 1.15


def _darts_pairs(genotype: dict, cell: str) -> list[tuple[str, int]]:
  pairs = genotype[cell]
  if not isinstance(pairs, list) or not pairs:
    raise ValueError(f"genotype[{cell!r}] is not a list of [op, source] pairs")
  return [(str(op), int(src)) for op, src in pairs]


def draw_darts_cell(genotype: dict, cell: str, path: str | os.PathLike,
                    title: str | None = None) -> Path:
  """One DARTS cell (`cell` = "normal" or "reduce") as a PNG: inputs
  c_{k-2}, c_{k-1} on the left, nodes in layers by dependency, c_{k} right."""
  pairs = _darts_pairs(genotype, cell)
  steps = (len(pairs) + 1) // 2
  concat = [int(c) for c in genotype.get(f"{cell}_concat", range(2, steps + 2))]
  states: dict[int, int] = {0: 0, 1: 0}    # state -> layer
  inputs: dict[int, list] = {}
  for k, (op, src) in enumerate(pairs):
    inputs.setdefault(2 + k // 2, []).append((op, src))
  for state in range(2, steps + 2):
    srcs = [s for _, s in inputs.get(state, [])]
    if any(s >= state or s < 0 for s in srcs):
      raise ValueError(f"{cell} cell: node {state - 2} has an input from a later state")
    states[state] = 1 + max((states[s] for s in srcs), default=0)
  out_layer = max(states.values()) + 1
  widest = max(_text_size(op, _LABEL_FONT)[0] for op, _ in pairs)
  # Layer l starts at xs[l]; a gap that many labelled edges end in is wider.
  xs = [0.0]
  for layer in range(1, out_layer + 1):
    ending = sum(1 for k, (_, src) in enumerate(pairs) if states[2 + k // 2] == layer)
    xs.append(xs[-1] + max(_XGAP_MIN, widest + 1.2 + 0.2 * max(0, ending - 4)))

  names = {0: "$c_{k-2}$", 1: "$c_{k-1}$"}
  nodes: dict = {}
  ys: dict[int, float] = {0: _YGAP * 0.85, 1: -_YGAP * 0.85}
  for layer in range(1, out_layer):
    members = [s for s in range(2, steps + 2) if states[s] == layer]
    # Barycentre order: a node sits near the mean height of its inputs.
    members.sort(key=lambda s: (np.mean([ys[src] for _, src in inputs.get(s, [])] or [0.0])
                                * -1, s))
    for i, s in enumerate(members):
      ys[s] = ((len(members) - 1) / 2 - i) * _YGAP * (1.35 if len(members) > 2 else 1.6)
  for state, layer in states.items():
    kind = "input" if state < 2 else "node"
    nodes[state] = _Node(state, names.get(state, str(state - 2)), xs[layer], ys[state], kind)
  nodes["out"] = _Node("out", "$c_{k}$", xs[out_layer], 0.0, "output")
  edges = [_Edge(src, state, op) for state in sorted(inputs) for op, src in inputs[state]]
  edges += [_Edge(c, "out", None) for c in concat if c in nodes]
  label = {"normal": "Normal cell", "reduce": "Reduction cell"}.get(cell, f"{cell} cell")
  subtitle = (f"node = sum of its 2 inputs; $c_{{k}}$ = concat of nodes "
              f"{', '.join(str(c - 2) for c in concat)}")
  if cell == "reduce":
    subtitle += "; ops on $c_{k-2}$, $c_{k-1}$ have stride 2"
  return _draw_graph(nodes, edges, Path(path), title or label, subtitle)


def draw_nb201_cell(genotype: dict, path: str | os.PathLike, title: str | None = None) -> Path:
  """The NAS-Bench-201 cell: 4 nodes in a row, 6 edges (`none` dashed grey)."""
  ops = [str(o) for o in genotype["ops"]]
  num_nodes = 1
  while num_nodes * (num_nodes - 1) // 2 < len(ops):
    num_nodes += 1
  if num_nodes * (num_nodes - 1) // 2 != len(ops):
    raise ValueError(f"NAS-Bench-201 genotype has {len(ops)} ops: not a full cell")
  edge_list = [(j, i) for i in range(1, num_nodes) for j in range(i)]
  xgap = max(_XGAP_MIN, max(_text_size(op, _LABEL_FONT)[0] for op in ops) + 1.2)
  nodes = {}
  for i in range(num_nodes):
    kind = "input" if i == 0 else "output" if i == num_nodes - 1 else "node"
    nodes[i] = _Node(i, str(i), i * xgap, 0.0, kind)
  edges = [_Edge(j, i, op) for (j, i), op in zip(edge_list, ops)]
  subtitle = f"node 0 = cell input, node {num_nodes - 1} = cell output; node = sum of its inputs"
  if genotype.get("arch_str"):
    subtitle = f"{genotype['arch_str']}\n{subtitle}"
  return _draw_graph(nodes, edges, Path(path), title or "NAS-Bench-201 cell", subtitle)


def draw_genotype(genotype: dict, outdir: str | os.PathLike,
                  prefix: str = "cell") -> list[tuple[Path, str]]:
  """Draws a DARTS (normal + reduce) or NAS-Bench-201 genotype: [(png, caption)]."""
  outdir = Path(outdir)
  out = []
  if "ops" in genotype:
    out.append((draw_nb201_cell(genotype, outdir / f"{prefix}.png"),
                "The found NAS-Bench-201 cell; dashed grey edges are `none` (no connection)."))
  else:
    for cell, caption in (("normal", "Normal cell"), ("reduce", "Reduction cell")):
      if cell in genotype:
        out.append((draw_darts_cell(genotype, cell, outdir / f"{prefix}_{cell}.png"),
                    f"{caption} of the found genotype: every node sums its two input "
                    "edges; c_{k} concatenates the nodes."))
  if not out:
    raise ValueError("genotype has neither 'ops' (NAS-Bench-201) nor 'normal' (DARTS)")
  return out


# --------------------------------------------------------------------------
# Heatmaps.


def _split_panels(row_names: Sequence[str]) -> list[tuple[str, list[int], list[str]]]:
  """Rows grouped by the prefix before '/': [(prefix, row indices, short names)]."""
  groups: dict[str, tuple[list, list]] = {}
  for i, name in enumerate(row_names):
    prefix, _, rest = str(name).rpartition("/")
    idx, short = groups.setdefault(prefix, ([], []))
    idx.append(i)
    short.append(rest if prefix else str(name))
  if len(groups) == 1 and "" in groups:
    return [("", list(range(len(row_names))), [str(n) for n in row_names])]
  return [(p, idx, short) for p, (idx, short) in groups.items()]


def _heatmap(path: Path, values: np.ndarray, row_names: Sequence[str],
             col_names: Sequence[str], *, title: str, cbar_label: str, xlabel: str,
             ylabel: str, vmin: float = 0.0, vmax: float | None = None,
             fmt: str = "{:.2f}", discrete: bool = False, mark_row_max: bool = False,
             note: str | None = None, panel_titles: dict | None = None,
             max_xticks: int | None = None) -> Path:
  """Rows x columns, NaN drawn grey; rows split into panels by name prefix."""
  values = np.asarray(values, float)
  nrows, ncols = values.shape
  panels = _split_panels(row_names)
  rows_per_panel = max(len(idx) for _, idx, _ in panels)
  finite = values[np.isfinite(values)]
  samples = [fmt.format(v) for v in (finite.min(), finite.max())] if finite.size else ["0"]
  ann_w = max(_text_size(t, 8.5, weight="bold")[0] for t in samples)
  annotate = ncols <= 16 and rows_per_panel <= 40
  cell_w = max(ann_w + 0.22, 0.5) if annotate else float(np.clip(9.0 / ncols, 0.2, 0.42))
  cell_w = min(cell_w, 16.0 / ncols)   # many iterations: narrower cells, not a huge image
  cell_h = 0.34 if annotate else 0.3
  # Show every tick_step-th column label, so that labels never collide.
  tick_step = max(1, math.ceil(ncols / max_xticks)) if max_xticks else 1
  shown = list(range(0, ncols, tick_step))
  label_w = max(_text_size(s, 10)[0] for _, _, short in panels for s in short) + 0.35
  col_w = max(_text_size(str(col_names[c]), 10)[0] for c in shown)
  if col_w <= cell_w * tick_step - 0.08:
    rotation = 0
  else:
    rotation = 45 if ncols <= 30 else 90
  col_h = {0: 0.2, 45: col_w * 0.72, 90: col_w}[rotation] + 0.25
  panel_w = ncols * cell_w + label_w + 0.5
  panel_h = rows_per_panel * cell_h + col_h + 0.4
  side_by_side = len(panels) > 1 and len(panels) * panel_w <= 15.0
  if side_by_side:
    width, height = len(panels) * panel_w + 1.3, panel_h + 0.9
  else:
    width, height = panel_w + 1.3, len(panels) * panel_h + 0.9
  width = max(width, _text_size(title, 14, weight="bold")[0] + 0.4, 5.0)
  if note:  # wrapped to the figure's width (about 14 characters an inch at 9.5 pt)
    note = "\n".join(textwrap.fill(line, max(int(width * 14), 30))
                     for line in note.split("\n"))
  fig = _new_figure(width, height + (0.2 + 0.18 * note.count("\n") if note else 0.0))
  grid = (1, len(panels)) if side_by_side else (len(panels), 1)
  axes = fig.subplots(*grid, squeeze=False).ravel()

  if vmax is None:
    vmax = float(finite.max()) if finite.size else 1.0
  if discrete:
    levels = int(round(vmax - vmin)) + 1
    cmap = matplotlib.colormaps[_CMAP].resampled(max(levels, 2))
    norm = mcolors.BoundaryNorm(np.arange(vmin - 0.5, vmax + 1.0), cmap.N)
  else:
    cmap = matplotlib.colormaps[_CMAP]
    norm = mcolors.Normalize(vmin=vmin, vmax=max(vmax, vmin + 1e-9))
  cmap = cmap.with_extremes(bad="#DDDDDD")
  image = None
  for ax, (prefix, idx, short) in zip(axes, panels):
    block = values[idx]
    image = ax.imshow(np.ma.masked_invalid(block), cmap=cmap, norm=norm, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(shown)
    ax.set_xticklabels([str(col_names[c]) for c in shown], rotation=rotation,
                       ha="right" if rotation == 45 else "center",
                       rotation_mode="anchor" if rotation == 45 else "default")
    ax.set_yticks(range(len(idx)))
    ax.set_yticklabels(short)
    ax.set_xticks(np.arange(-0.5, ncols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(idx), 1), minor=True)
    if cell_w >= 0.15:
      ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2)
    for spine in ax.spines.values():
      spine.set_visible(False)
    name = (panel_titles or {}).get(prefix, prefix)
    if name:
      ax.set_title(name, fontsize=12, weight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for r in range(len(idx)):
      row = block[r]
      best = int(np.nanargmax(row)) if np.isfinite(row).any() else -1
      if mark_row_max and best >= 0:
        ax.add_patch(Rectangle((best - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#D55E00",
                               linewidth=2.0, zorder=3))
      if not annotate:
        continue
      for c in range(ncols):
        if np.isfinite(row[c]):
          colour = "black" if _luminance(cmap(norm(row[c]))) > 0.45 else "white"
          ax.text(c, r, fmt.format(row[c]), ha="center", va="center", fontsize=8.5,
                  color=colour, weight="bold" if c == best and mark_row_max else "normal")
  cbar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 6.0 / height + 0.3),
                      aspect=30, pad=0.02)
  cbar.set_label(cbar_label)
  if discrete:
    cbar.set_ticks(np.arange(vmin, vmax + 1, max(1, int(round((vmax - vmin) / 10)))))
  fig.suptitle(title, weight="bold")
  if note:
    fig.supxlabel(note, fontsize=9.5, color="#404040")
  return _save(fig, path)


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


_PANEL_TITLES = {"normal": "Normal cell", "reduce": "Reduction cell",
                 "cell": "NAS-Bench-201 cell"}


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
  return _heatmap(
      Path(path), values, rows, _col_names(summary, num_ops),
      title="Architecture weights at the end of the search: softmax(α) over active ops",
      cbar_label="softmax(α)", xlabel="op", ylabel="edge (source → target)"
      if any("->" in r for r in rows) else "choice point",
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


def _ema(values: np.ndarray, span: float) -> np.ndarray:
  alpha = 2.0 / (span + 1.0)
  out = np.empty_like(values)
  acc = values[0]
  for i, v in enumerate(values):
    acc = alpha * v + (1 - alpha) * acc
    out[i] = acc
  return out


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
    n = len(metrics)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.6 * ncols + 0.3, 3.3 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, (steps, vals)) in zip(axes, metrics.items()):
      steps, vals = np.asarray(steps, float), np.asarray(vals, float)
      monotonic = bool(np.all(np.diff(steps) >= 0))
      x = steps if monotonic else np.arange(len(steps), dtype=float)
      colour = _SERIES_COLOURS[0]
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
        if ax is axes[0]:
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
    for ax in axes[n:]:
      ax.set_visible(False)
    fig.suptitle(f"{prefix} metrics", weight="bold")
    out.append((_save(fig, path), f"Metrics {', '.join(f'{prefix}/{m}' for m in metrics)} "
                "from metrics.jsonl."))
  return out


# --------------------------------------------------------------------------
# RADARS controller history.


def _as_float(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return float("nan")


def plot_history(history: Sequence[dict], summary: dict | None,
                 outdir: str | os.PathLike) -> list[tuple[Path, str]]:
  """RADARS iterations: rewards, alive ops, final policy, other scalars."""
  outdir = Path(outdir)
  summary = summary or {}
  out = []
  if not history:   # (the whole space fit the budget: no iteration ran)
    return out
  iters = np.array([_as_float(h.get("iteration", i)) for i, h in enumerate(history)])

  rewards = [h.get("rewards") for h in history]
  best = np.array([_as_float(h.get("best_reward")) for h in history])
  has_rewards = any(isinstance(r, list) and r for r in rewards)
  if has_rewards or np.isfinite(best).any():
    fig = _new_figure(8.0, 4.6)
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
      ax.plot(iters, mean, color=_SERIES_COLOURS[0], marker="o" if few else None,
              markersize=4, linewidth=1.8, label="mean")
      ax.plot(iters, top, color=_SERIES_COLOURS[1], marker="s" if few else None,
              markersize=4, linewidth=1.8, label="max")
    so_far = np.fmax(best, top)
    so_far = np.fmax.accumulate(np.where(np.isfinite(so_far), so_far, -np.inf))
    so_far[~np.isfinite(so_far)] = np.nan
    ax.step(iters, so_far, where="post", color=_SERIES_COLOURS[2], linewidth=2.2,
            label="best so far")
    ax.set_xlabel("RADARS iteration")
    ax.set_ylabel("reward")
    ax.set_title("Controller rewards per iteration", weight="bold")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    out.append((_save(fig, outdir / "radars_rewards.png"),
                "Rewards of the subspaces sampled in each RADARS iteration: every sample "
                "(grey), their mean and max, and the best reward so far."))

  alive = [h.get("alive") for h in history]
  counts = None
  if any(isinstance(a, list) and a for a in alive):
    num_cp = max(len(a) for a in alive if isinstance(a, list))
    counts = np.full((num_cp, len(history)), np.nan)
    for i, a in enumerate(alive):
      if isinstance(a, list):
        for c, row in enumerate(a):
          if isinstance(row, list):
            counts[c, i] = sum(bool(v) for v in row)
    max_ops = max(len(row) for a in alive if isinstance(a, list) for row in a
                  if isinstance(row, list))
    labels = [str(int(v)) if float(v).is_integer() else str(v) for v in iters]
    out.append((_heatmap(
        outdir / "radars_alive.png", counts, _row_names(summary, num_cp), labels,
        title="Alive ops per choice point over RADARS iterations",
        cbar_label="alive ops", xlabel="RADARS iteration",
        ylabel="choice point", vmin=0, vmax=max_ops, fmt="{:.0f}", discrete=True,
        panel_titles=_PANEL_TITLES, max_xticks=25),
        "How many ops of each choice point the controller keeps alive, per iteration."))

  probs = history[-1].get("policy_probs")
  if isinstance(probs, list) and probs and all(isinstance(p, list) for p in probs):
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
    out.append((_heatmap(
        outdir / "radars_policy.png", values, rows, _col_names(summary, num_ops),
        title=f"Controller policy after RADARS iteration {it}",
        cbar_label="probability", xlabel="op",
        ylabel="edge (source → target)" if any("->" in r for r in rows)
        else "choice point", mark_row_max=True, note=note, panel_titles=_PANEL_TITLES),
        "Probabilities of the RADARS controller's policy at the last iteration."))

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
  series = {k: v for k, v in series.items() if np.isfinite(v).any()}
  if series:
    n = len(series)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.6 * ncols + 0.3, 3.3 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    budget = summary.get("memory_budget_bytes")
    for ax, (key, vals) in zip(axes, series.items()):
      label = key.replace("_", " ")
      if key.endswith("_bytes"):
        vals = vals / _GB
        label = label[:-len(" bytes")] + " memory (GB)"
        if isinstance(budget, (int, float)) and budget > 0:
          ax.axhline(budget / _GB, color=_SERIES_COLOURS[1], linestyle="--", linewidth=1.5,
                     label="memory budget")
          ax.legend(loc="best", frameon=False)
      ax.plot(iters, vals, color=_SERIES_COLOURS[0], marker="o" if len(iters) <= 30 else None,
              markersize=4, linewidth=1.8)
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
    for ax in axes[n:]:
      ax.set_visible(False)
    fig.suptitle("RADARS iterations", weight="bold")
    out.append((_save(fig, outdir / "radars_progress.png"),
                f"Per RADARS iteration: {', '.join(k.replace('_', ' ') for k in series)}."))
  return out


# --------------------------------------------------------------------------
# The page.


def _format_value(key: str, value) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (int, float)) and not math.isfinite(float(value)):
    return str(value)
  if key.endswith("_bytes") and isinstance(value, (int, float)):
    return f"{value / _GB:.3f} GB ({int(value):,} bytes)"
  if key.endswith("seconds") and isinstance(value, (int, float)):
    text = f"{value:.1f} s"
    if value >= 60:
      text += f" ({datetime.timedelta(seconds=round(value))})"
    return text
  if "accuracy" in key and isinstance(value, float) and 0.0 <= value <= 1.0:
    return f"{value * 100:.2f} %"
  if key in ("weights", "flops", "supernet_weights", "params") and isinstance(value, int):
    return f"{value:,} ({value / 1e6:.2f} M)"
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, int):
    return f"{value:,}" if abs(value) >= 10000 else str(value)
  return str(value)


def _scalar_rows(data: dict) -> list[tuple[str, str]]:
  rows = []
  for key, value in data.items():
    if value is None or isinstance(value, (bool, int, float, str)):
      rows.append((key, _format_value(key, value)))
  if isinstance(data.get("choice_points"), list):
    rows.append(("choice points", str(len(data["choice_points"]))))
  if isinstance(data.get("space_ops"), list):
    rows.append(("space ops", f"{len(data['space_ops'])}: {', '.join(map(str, data['space_ops']))}"))
  return rows


def genotype_text(genotype: dict) -> str:
  """A human-readable genotype: one line per node (DARTS) or the arch string."""
  if "ops" in genotype:
    lines = [genotype.get("arch_str") or " ".join(map(str, genotype["ops"]))]
    return "\n".join(lines)
  state_names = {0: "c_{k-2}", 1: "c_{k-1}"}
  lines = []
  for cell in ("normal", "reduce"):
    if cell not in genotype:
      continue
    pairs = _darts_pairs(genotype, cell)
    lines.append(f"{cell} cell:")
    for k in range(0, len(pairs), 2):
      parts = [f"{op}({state_names.get(src, f'node {src - 2}')})" for op, src in pairs[k:k + 2]]
      lines.append(f"  node {k // 2} = {' + '.join(parts)}")
    concat = genotype.get(f"{cell}_concat", [])
    lines.append(f"  c_{{k}} = concat({', '.join(f'node {int(c) - 2}' for c in concat)})")
  return "\n".join(lines)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #202020; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.key { font-family: monospace; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; border-radius: 4px; }
figure { margin: 1.2em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #444; font-size: 0.95em; margin-top: 0.3em; }
.problems { color: #8a4b00; }
"""


def _html_table(headers: tuple[str, ...], rows: list[tuple], key_column: bool = False) -> str:
  """An HTML table; cells are escaped (`key_column`: the first styled as a key)."""
  def cell(i: int, value) -> str:
    attr = " class='key'" if key_column and i == 0 else ""
    return f"<td{attr}>{html.escape(str(value))}</td>"

  head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
  body = "\n".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
  return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _table(rows: list[tuple[str, str]]) -> str:
  return _html_table(("key", "value"), rows, key_column=True)


def _compiles_table(compiles: list) -> str:
  """RADARS' train-step compiles (summary.json `compiles`), one row each."""
  rows = [(c.get("what", "?"),
           "-" if c.get("bytes") is None else memory_lib.format_gb(c["bytes"]),
           f"{c.get('compile_seconds', 0.0):.1f} s", f"{c.get('waited_seconds', 0.0):.1f} s",
           "background" if c.get("ahead") else "the loop") for c in compiles]
  return _html_table(("compiled", "XLA bytes", "compile", "the search waited", "compiled in"),
                     rows)


def _figures(items: list[tuple[Path, str]]) -> str:
  parts = []
  for path, caption in items:
    name = html.escape(path.name)
    size = ""
    try:  # shown at 96 px per inch: every picture's text at its point size
      header = path.read_bytes()[:24]
      width = int.from_bytes(header[16:20], "big")
      size = f" width='{round(width * 96 / DPI)}'" if header[:4] == b"\x89PNG" else ""
    except OSError:
      pass
    parts.append(f"<figure><a href='{name}'><img src='{name}'{size} "
                 f"alt='{html.escape(caption)}'>"
                 f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")
  return "\n".join(parts)


def _write_html(data: WorkdirData, sections: list[tuple[str, list]], outdir: Path) -> Path:
  summary, ev = data.summary or {}, data.eval or {}
  if data.summary is not None:
    kind = "search"
    what = " ".join(str(x) for x in (summary.get("method"), "on",
                                     summary.get("space"), "/", summary.get("dataset"))
                    if x is not None)
  else:
    kind, what = "training", str(ev.get("dataset", "") or "")
  title = f"radars_jax {kind} report" + (f": {what}" if what.strip(" /on") else "")
  now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  out = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
         f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{html.escape(title)}</h1>",
         f"<p class='meta'>Workdir <code>{html.escape(str(data.path.resolve()))}</code>; "
         f"report written {now}.</p>"]
  if data.summary is not None:
    out += ["<h2>Search summary</h2>", _table(_scalar_rows(summary))]
    if isinstance(summary.get("compiles"), list) and summary["compiles"]:
      try:
        out += ["<h2>Train-step compiles</h2>", _compiles_table(summary["compiles"])]
      except (AttributeError, TypeError, ValueError) as e:
        data.problems.append(f"compiles table: {type(e).__name__}: {e}")
  if data.eval is not None:
    out += ["<h2>Evaluation (retraining)</h2>", _table(_scalar_rows(ev))]
  if data.genotype is not None:
    out += ["<h2>Genotype</h2>"]
    try:
      out.append(f"<pre>{html.escape(genotype_text(data.genotype))}</pre>")
    except (KeyError, ValueError, TypeError):
      pass
    out.append(f"<pre>{html.escape(json.dumps(data.genotype))}</pre>")
  for heading, items in sections:
    if items:
      out += [f"<h2>{html.escape(heading)}</h2>", _figures(items)]
  if data.problems:
    out += ["<h2>Not drawn</h2><ul class='problems'>"]
    out += [f"<li>{html.escape(p)}</li>" for p in data.problems]
    out += ["</ul>"]
  out.append("</body></html>\n")
  path = outdir / "index.html"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("\n".join(out), encoding="utf-8")
  os.replace(tmp, path)
  return path


def _attempt(data: WorkdirData, what: str, fn, *args) -> list:
  """Runs one drawing; malformed data becomes a line on the page, not a crash."""
  try:
    result = fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    log.warning("report: cannot draw %s: %s: %s", what, type(e).__name__, e)
    data.problems.append(f"{what}: {type(e).__name__}: {e}")
    return []
  if result is None:
    return []
  return result if isinstance(result, list) else [result]


def write_report(workdir: str | os.PathLike) -> Path:
  """Writes WORKDIR/report/ (PNGs and index.html); returns the report dir."""
  data = load_workdir(workdir)
  outdir = data.path / REPORT_DIR
  try:
    outdir.mkdir(exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {outdir}: {e.strerror}") from None
  sections = []
  with matplotlib.rc_context(_STYLE):
    if data.genotype is not None:
      sections.append(("Found cell", _attempt(data, "cell drawing", draw_genotype,
                                               data.genotype, outdir)))
    if data.summary is not None and data.summary.get("alphas"):
      path = outdir / "alphas.png"
      sections.append(("Architecture weights", [
          (p, "softmax(α) of every choice point over the ops of the final DNAS subspace "
              "(the genotype keeps, per node, the two edges with the strongest non-none op).")
          for p in _attempt(data, "alpha heatmap", plot_alphas, data.summary, path)]))
    if data.metrics:
      heading = "Search curves" if data.summary is not None else "Training curves"
      sections.append((heading, _attempt(data, "metric curves", plot_metrics, data.metrics,
                                         outdir)))
    if data.history:
      sections.append(("RADARS controller", _attempt(data, "RADARS history", plot_history,
                                                     data.history, data.summary, outdir)))
  _write_html(data, sections, outdir)
  return outdir


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m radars_jax.report",
      description="Writes WORKDIR/report/: cell drawings, alpha heatmaps, curves, index.html.")
  parser.add_argument("workdir", help="a search or training workdir")
  args = parser.parse_args(argv)
  try:
    outdir = write_report(args.workdir)
  except UserError as e:
    print(f"radars_jax.report: error: {e}", file=sys.stderr)
    return 2
  print(outdir / "index.html")
  return 0


if __name__ == "__main__":
  sys.exit(main())
