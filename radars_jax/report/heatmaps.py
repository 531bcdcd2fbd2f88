"""A labelled heatmap: rows x columns of values, NaN drawn grey, rows split
into panels by the prefix of their name (`normal/...`, `reduce/...`).

The figure is sized to its labels: cells wide enough for their numbers,
column labels turned only when they would collide, panels side by side
while they fit.
"""
from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import matplotlib
from matplotlib import colors as mcolors
from matplotlib.patches import Rectangle

from radars_jax.report import style


@dataclasses.dataclass
class _Layout:
  """Sizes (inches) and tick choices of one heatmap figure."""
  panels: list          # [(prefix, row indices, short names)]
  annotate: bool        # values written in their cells
  cell_w: float
  shown: list           # the columns whose label is drawn
  rotation: int         # of the column labels: 0, 45 or 90 degrees
  side_by_side: bool
  width: float
  height: float


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


def _luminance(rgba) -> float:
  r, g, b = rgba[:3]
  return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _layout(values: np.ndarray, row_names: Sequence[str], col_names: Sequence[str],
            title: str, fmt: str, max_xticks: int | None) -> _Layout:
  """Sizes the figure to its labels and numbers."""
  ncols = values.shape[1]
  panels = _split_panels(row_names)
  rows_per_panel = max(len(idx) for _, idx, _ in panels)
  finite = values[np.isfinite(values)]
  samples = [fmt.format(v) for v in (finite.min(), finite.max())] if finite.size else ["0"]
  ann_w = max(style.text_size(t, 8.5, weight="bold")[0] for t in samples)
  annotate = ncols <= 16 and rows_per_panel <= 40
  cell_w = max(ann_w + 0.22, 0.5) if annotate else float(np.clip(9.0 / ncols, 0.2, 0.42))
  cell_w = min(cell_w, 16.0 / ncols)   # many iterations: narrower cells, not a huge image
  cell_h = 0.34 if annotate else 0.3
  # Show every tick_step-th column label, so that labels never collide.
  tick_step = max(1, math.ceil(ncols / max_xticks)) if max_xticks else 1
  shown = list(range(0, ncols, tick_step))
  label_w = max(style.text_size(s, 10)[0] for _, _, short in panels for s in short) + 0.35
  col_w = max(style.text_size(str(col_names[c]), 10)[0] for c in shown)
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
  width = max(width, style.text_size(title, 14, weight="bold")[0] + 0.4, 5.0)
  return _Layout(panels, annotate, cell_w, shown, rotation, side_by_side, width, height)


def _colour_scale(finite: np.ndarray, vmin: float, vmax: float | None, discrete: bool):
  """(colour map, norm, vmax); `discrete`: one colour per whole number."""
  if vmax is None:
    vmax = float(finite.max()) if finite.size else 1.0
  if discrete:
    levels = int(round(vmax - vmin)) + 1
    cmap = matplotlib.colormaps[style.CMAP].resampled(max(levels, 2))
    norm = mcolors.BoundaryNorm(np.arange(vmin - 0.5, vmax + 1.0), cmap.N)
  else:
    cmap = matplotlib.colormaps[style.CMAP]
    norm = mcolors.Normalize(vmin=vmin, vmax=max(vmax, vmin + 1e-9))
  return cmap.with_extremes(bad="#DDDDDD"), norm, vmax


def _draw_panel(ax, block: np.ndarray, short: list[str], col_names: Sequence[str],
                layout: _Layout, cmap, norm, *, name: str, xlabel: str, ylabel: str,
                fmt: str, mark_row_max: bool):
  """One panel's rows: the image, ticks, the boxed row maxima and the numbers."""
  ncols = block.shape[1]
  rotation = layout.rotation
  image = ax.imshow(np.ma.masked_invalid(block), cmap=cmap, norm=norm, aspect="auto",
                    interpolation="nearest")
  ax.set_xticks(layout.shown)
  ax.set_xticklabels([str(col_names[c]) for c in layout.shown], rotation=rotation,
                     ha="right" if rotation == 45 else "center",
                     rotation_mode="anchor" if rotation == 45 else "default")
  ax.set_yticks(range(len(short)))
  ax.set_yticklabels(short)
  ax.set_xticks(np.arange(-0.5, ncols, 1), minor=True)
  ax.set_yticks(np.arange(-0.5, len(short), 1), minor=True)
  if layout.cell_w >= 0.15:
    ax.grid(which="minor", color="white", linewidth=1.0)
  ax.tick_params(which="minor", length=0)
  ax.tick_params(which="major", length=2)
  for spine in ax.spines.values():
    spine.set_visible(False)
  if name:
    ax.set_title(name, fontsize=12, weight="bold")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  for r, row in enumerate(block):
    best = int(np.nanargmax(row)) if np.isfinite(row).any() else -1
    if mark_row_max and best >= 0:
      ax.add_patch(Rectangle((best - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#D55E00",
                             linewidth=2.0, zorder=3))
    if not layout.annotate:
      continue
    for c in range(ncols):
      if np.isfinite(row[c]):
        colour = "black" if _luminance(cmap(norm(row[c]))) > 0.45 else "white"
        ax.text(c, r, fmt.format(row[c]), ha="center", va="center", fontsize=8.5,
                color=colour, weight="bold" if c == best and mark_row_max else "normal")
  return image


def heatmap(path: Path, values: np.ndarray, row_names: Sequence[str],
            col_names: Sequence[str], *, title: str, cbar_label: str, xlabel: str,
            ylabel: str, vmin: float = 0.0, vmax: float | None = None,
            fmt: str = "{:.2f}", discrete: bool = False, mark_row_max: bool = False,
            note: str | None = None, panel_titles: dict | None = None,
            max_xticks: int | None = None) -> Path:
  """Rows x columns, NaN drawn grey; rows split into panels by name prefix.

  `fmt` writes the values in their cells (when there are few enough);
  `discrete` gives whole numbers one colour each; `mark_row_max` boxes the
  largest value of each row; `note` is printed below; `panel_titles` names
  the panels by prefix; `max_xticks` caps how many column labels are drawn.
  """
  values = np.asarray(values, float)
  layout = _layout(values, row_names, col_names, title, fmt, max_xticks)
  width, height = layout.width, layout.height
  if note:  # wrapped to the figure's width (about 14 characters an inch at 9.5 pt)
    note = "\n".join(textwrap.fill(line, max(int(width * 14), 30))
                     for line in note.split("\n"))
  fig = style.new_figure(width, height + (0.2 + 0.18 * note.count("\n") if note else 0.0))
  npanels = len(layout.panels)
  grid = (1, npanels) if layout.side_by_side else (npanels, 1)
  axes = fig.subplots(*grid, squeeze=False).ravel()
  cmap, norm, vmax = _colour_scale(values[np.isfinite(values)], vmin, vmax, discrete)
  image = None
  for ax, (prefix, idx, short) in zip(axes, layout.panels):
    image = _draw_panel(ax, values[idx], short, col_names, layout, cmap, norm,
                        name=(panel_titles or {}).get(prefix, prefix), xlabel=xlabel,
                        ylabel=ylabel, fmt=fmt, mark_row_max=mark_row_max)
  cbar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 6.0 / height + 0.3),
                      aspect=30, pad=0.02)
  cbar.set_label(cbar_label)
  if discrete:
    cbar.set_ticks(np.arange(vmin, vmax + 1, max(1, int(round((vmax - vmin) / 10)))))
  fig.suptitle(title, weight="bold")
  if note:
    fig.supxlabel(note, fontsize=9.5, color="#404040")
  return style.save_figure(fig, path)
