"""Drawings of a found cell: DARTS (normal, reduce) or NAS-Bench-201; and
of a found mobile network, its blocks in a row (`draw_mobile_network`).

Nodes sit at fixed places, edges are quadratic Bezier curves bent around
nodes, and each op label is put along its edge where it overlaps least;
edges are coloured by op family (`style.op_family`). One data unit is one
inch, so that text sizes measured beforehand fit.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath

from radars_jax.report import style

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
    w, h = style.text_size(edge.op, _LABEL_FONT)
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


def _draw_parts(ax, nodes: dict, edges: list) -> None:
  """The routed edges (coloured by op family), their labels and the nodes."""
  for e in edges:
    if e.op is None:
      colour, line, lw, z = "#6E6E6E", "-", 1.3, 1
    else:
      family = style.op_family(e.op)
      colour, lw, z = style.FAMILY_COLOURS[family], 2.0, 2
      line = "--" if family == "none" else "-"
    ax.add_patch(FancyArrowPatch(
        path=MplPath(e.pts), arrowstyle="-|>", mutation_scale=16, color=colour,
        linewidth=lw, linestyle=line, zorder=z, shrinkA=0, shrinkB=0))
  for e in edges:
    if e.label_box is None:
      continue
    colour = style.FAMILY_COLOURS[style.op_family(e.op)]
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


def _draw_graph(nodes: dict, edges: list, path: Path, title: str,
                subtitle: str | None = None) -> Path:
  """Draws a laid-out cell; 1 data unit = 1 inch, so text sizes are known."""
  for n in nodes.values():
    w, _ = style.text_size(n.label, _NODE_FONT)
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
  families = sorted({style.op_family(e.op) for e in edges if e.op is not None},
                    key=list(style.FAMILY_COLOURS).index)
  title_w, _ = style.text_size(title, 14, weight="bold")
  sub_w, sub_h = style.text_size(subtitle, 10, linespacing=1.5) if subtitle else (0.0, 0.0)
  legend_w = sum(style.text_size(style.FAMILY_NAMES[f], 10)[0] + 0.9 for f in families)
  min_w = max(title_w, sub_w, legend_w) + 0.3
  if x1 - x0 < min_w:
    grow = (min_w - (x1 - x0)) / 2
    x0, x1 = x0 - grow, x1 + grow
  top = 0.5 + (sub_h + 0.15 if subtitle else 0.0)
  bottom = 0.55 if families else 0.1
  width, height = x1 - x0, y1 - y0 + top + bottom
  fig = style.new_figure(width, height, layout=None)
  ax = fig.add_axes((0, bottom / height, 1, (y1 - y0) / height))
  ax.set_xlim(x0, x1)
  ax.set_ylim(y0, y1)
  ax.set_axis_off()

  _draw_parts(ax, nodes, edges)

  fig.text(0.5, 1 - 0.28 / height, title, ha="center", va="center", fontsize=14,
           weight="bold")
  if subtitle:
    fig.text(0.5, 1 - 0.48 / height, subtitle, ha="center", va="top", fontsize=10,
             color="#404040", linespacing=1.5)
  if families:
    handles = [Line2D([0], [0], color=style.FAMILY_COLOURS[f], lw=2.5,
                      linestyle="--" if f == "none" else "-") for f in families]
    fig.legend(handles, [style.FAMILY_NAMES[f] for f in families], loc="lower center",
               bbox_to_anchor=(0.5, 0.02 / height), ncol=len(families), frameon=False,
               fontsize=10, handlelength=2.2)
  return style.save_figure(fig, path)


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
  widest = max(style.text_size(op, _LABEL_FONT)[0] for op, _ in pairs)
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
  xgap = max(_XGAP_MIN, max(style.text_size(op, _LABEL_FONT)[0] for op in ops) + 1.2)
  nodes = {}
  for i in range(num_nodes):
    kind = "input" if i == 0 else "output" if i == num_nodes - 1 else "node"
    nodes[i] = _Node(i, str(i), i * xgap, 0.0, kind)
  edges = [_Edge(j, i, op) for (j, i), op in zip(edge_list, ops)]
  subtitle = f"node 0 = cell input, node {num_nodes - 1} = cell output; node = sum of its inputs"
  if genotype.get("arch_str"):
    subtitle = f"{genotype['arch_str']}\n{subtitle}"
  return _draw_graph(nodes, edges, Path(path), title or "NAS-Bench-201 cell", subtitle)


_KERNEL_COLOURS = {3: "#56B4E9", 5: "#0072B2", 7: "#00385A"}


def draw_mobile_network(genotype: dict, path: str | os.PathLike,
                        title: str | None = None) -> Path:
  """A mobile genotype's blocks left to right, stage by stage: each block a
  box whose height is its expansion and whose colour its kernel, labelled
  `k5 e6`; a skipped block (`none`) a dashed outline."""
  blocks, stages = list(genotype["blocks"]), mobile_stages(genotype)
  box_w, gap, stage_gap = 0.55, 0.12, 0.45
  width = len(blocks) * (box_w + gap) + len(stages) * stage_gap + 0.6
  fig = style.new_figure(max(width, 5.0), 2.6, layout=None)
  ax = fig.add_axes((0, 0.05, 1, 0.72))
  ax.set_xlim(0, max(width, 5.0))
  ax.set_ylim(-0.55, 1.35)
  ax.set_axis_off()
  x = 0.3
  for s, stage in enumerate(stages):
    start = x
    for op in stage:
      if op == "none":
        ax.add_patch(FancyBboxPatch((x, 0.1), box_w, 0.4, boxstyle="round,pad=0.02",
                                    fill=False, linestyle="--", edgecolor="#808080"))
        ax.text(x + box_w / 2, 0.3, "skip", ha="center", va="center", fontsize=8,
                color="#808080")
      else:
        k, e = kernel_and_expansion(op)
        h = 0.4 + 0.1 * e
        ax.add_patch(FancyBboxPatch((x, 0.0), box_w, h, boxstyle="round,pad=0.02",
                                    facecolor=_KERNEL_COLOURS.get(k, "#404040"),
                                    edgecolor="black", linewidth=0.6))
        ax.text(x + box_w / 2, h / 2, f"k{k}\ne{e}", ha="center", va="center", fontsize=8,
                color="white")
      x += box_w + gap
    ax.text((start + x - gap) / 2, -0.3, f"stage {s + 1}", ha="center", va="center",
            fontsize=9, color="#404040")
    x += stage_gap
  fig.text(0.5, 0.92, title or "Found mobile network", ha="center", va="center",
           fontsize=14, weight="bold")
  skipped = blocks.count("none")
  fig.text(0.5, 0.82, f"{len(blocks) - skipped} MBConv blocks, {skipped} skipped; "
           "height: expansion, colour: kernel (light 3, mid 5, dark 7)",
           ha="center", va="center", fontsize=9, color="#404040")
  return style.save_figure(fig, Path(path))


def mobile_stages(genotype: dict) -> list[list[str]]:
  """A mobile genotype's block ops, one list per stage."""
  blocks, stages = list(genotype["blocks"]), []
  for n in genotype["stage_blocks"]:
    stages.append(blocks[:n])
    blocks = blocks[n:]
  return stages


def kernel_and_expansion(op: str) -> tuple[int, int]:
  """(kernel, expansion) of an `mbconv_KxK_eE` op."""
  _, kernel, expansion = op.split("_")
  return int(kernel.split("x")[0]), int(expansion[1:])


def draw_genotype(genotype: dict, outdir: str | os.PathLike,
                  prefix: str = "cell") -> list[tuple[Path, str]]:
  """Draws a DARTS (normal + reduce), NAS-Bench-201 or mobile genotype:
  [(png, caption)]."""
  outdir = Path(outdir)
  out = []
  if "blocks" in genotype:
    out.append((draw_mobile_network(genotype, outdir / f"{prefix}_mobile.png"),
                "The found mobile network, one box per MBConv block; dashed: skipped."))
  elif "ops" in genotype:
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



def genotype_text(genotype: dict) -> str:
  """A human-readable genotype: one line per node (DARTS), the arch string
  (NAS-Bench-201) or one line per stage (mobile)."""
  if "blocks" in genotype:
    return "\n".join(f"stage {s + 1}: " + " ".join(ops)
                     for s, ops in enumerate(mobile_stages(genotype)))
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

