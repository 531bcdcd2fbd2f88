"""The look shared by every picture of the report: colours, op families,
matplotlib's rc settings, and making, measuring and saving figures.

Figures are `Figure` objects on matplotlib's Agg canvas (no pyplot), so
nothing is shown on screen and no global figure is left open.
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150
GB = 1e9

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
SERIES_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
CMAP = "viridis"
STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10,
    "figure.titlesize": 14, "axes.spines.top": False, "axes.spines.right": False,
}


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


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
  """A `width` x `height` inch figure on its own Agg canvas (no pyplot)."""
  fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
  if layout == "constrained":
    fig.get_layout_engine().set(w_pad=0.12, h_pad=0.12)   # inches of margin
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path: Path) -> Path:
  """Writes a PNG atomically (a reader never sees half a file)."""
  tmp = path.with_name(path.name + ".tmp")
  fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
  os.replace(tmp, path)
  fig.clear()
  return path


_TEXT_CACHE: dict = {}


def text_size(text: str, fontsize: float, **kwargs) -> tuple[float, float]:
  """(width, height) in inches of `text` as rendered: figures are sized to
  their labels before they are drawn."""
  key = (text, fontsize, tuple(sorted(kwargs.items())))
  if key not in _TEXT_CACHE:
    fig = new_figure(1, 1, layout=None)
    artist = fig.text(0, 0, text, fontsize=fontsize, **kwargs)
    box = artist.get_window_extent(fig.canvas.get_renderer())
    _TEXT_CACHE[key] = (box.width / DPI, box.height / DPI)
  return _TEXT_CACHE[key]
