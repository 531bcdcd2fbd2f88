"""The weight pool: every op's weights, kept across subspaces.

Keys are parameter paths (`cell_3/edge_1_4/sep_conv_3x3/...`): the cell,
the edge (the choice point) and the op. A subspace's parameter tree is a
selection from the pool (ops seen before start from what they learned: every
reuse is a hit, as in FNAS's knowledge pool), and after a subspace is trained
its weights are written back. The pool lives in host memory, so device
memory holds only the active subspace.

A cell computed by `lax.scan` (`supernet.scan_edges`) stores the weights of
the edges it scans stacked along a leading axis, under a module named by
those edges in order (`cell_3/edges_0-2_1-2_.../sep_conv_3x3/...`: one
array instead of 14, so the optimiser and XLA see about 10x fewer). The
pool always speaks the per-edge paths: `canonical` splits stacked weights
into their edges' paths and `restack` builds any model's tree back from
them, so scanned and per-edge supernets share weights (and initial values).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


def flatten(params) -> dict[str, Any]:
  return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: dict[str, Any]):
  return traverse_util.unflatten_dict(flat, sep="/")


STACKED_EDGES = "edges_"


def stacked_edges_name(edges) -> str:
  """The module name of the weights of `edges` [(src, dst), ...] stored
  stacked, in this order: `edges_0-2_1-2`."""
  return STACKED_EDGES + "_".join(f"{src}-{dst}" for src, dst in edges)


def _edge_paths(path: str) -> list[str] | None:
  """The per-edge paths of the stacked-edges weight at `path`, in stack
  order; None for a weight of one edge or of none."""
  parts = path.split("/")
  for i, part in enumerate(parts):
    if part.startswith(STACKED_EDGES):
      return ["/".join(parts[:i] + ["edge_" + edge.replace("-", "_")] + parts[i + 1:])
              for edge in part[len(STACKED_EDGES):].split("_")]
  return None


def canonical(params) -> dict[str, Any]:
  """`flatten(params)` with every stacked-edges weight split into its edges'
  own paths (`cell_0/edges_0-2_1-2/op/w` -> `cell_0/edge_0_2/op/w`,
  `cell_0/edge_1_2/op/w`): the paths of one mixed op per edge, however the
  supernet stores them. Leaves may be arrays or `jax.ShapeDtypeStruct`s."""
  out = {}
  for path, value in flatten(params).items():
    edge_paths = _edge_paths(path)
    if edge_paths is None:
      out[path] = value
      continue
    if value.shape[0] != len(edge_paths):
      raise ValueError(f"{path}: leading axis {value.shape[0]}, {len(edge_paths)} edges")
    for i, edge_path in enumerate(edge_paths):
      out[edge_path] = (jax.ShapeDtypeStruct(value.shape[1:], value.dtype)
                        if isinstance(value, jax.ShapeDtypeStruct) else value[i])
  return out


def restack(flat: dict[str, Any], template):
  """`template`'s tree (any model's parameters, stacked or per edge) with
  every leaf taken from `flat` (`canonical` paths): a stacked-edges weight
  is its edges' weights stacked."""
  out = {}
  for path in flatten(template):
    edge_paths = _edge_paths(path)
    if edge_paths is None:
      out[path] = flat[path]
    else:
      leaves = [flat[p] for p in edge_paths]
      out[path] = (np.stack(leaves) if all(isinstance(v, np.ndarray) for v in leaves)
                   else jnp.stack(leaves))
  return unflatten(out)


class WeightPool:
  """Host-side {path: array} store with hit/miss counts."""

  def __init__(self, arrays: dict[str, np.ndarray] | None = None):
    self.arrays: dict[str, np.ndarray] = dict(arrays or {})
    self.hits = 0
    self.misses = 0

  def __len__(self) -> int:
    return len(self.arrays)

  def select(self, template) -> Any:
    """`template`'s tree with every leaf the pool has replaced by the pool's
    value (shapes must agree); the rest keep the template's (fresh) values."""
    out = {}
    for path, value in canonical(template).items():
      stored = self.stored(path)
      if stored is not None and stored.shape == tuple(value.shape):
        out[path] = stored
        self.hits += 1
      else:
        out[path] = value
        self.misses += 1
    return restack(out, template)

  def write_back(self, params) -> None:
    for path, value in canonical(jax.device_get(params)).items():
      self.store(path, value)

  def stored(self, path: str):
    """The pool's array at `path` (a per-edge path), or None."""
    return self.arrays.get(path)

  def store(self, path: str, value) -> None:
    self.arrays[path] = np.asarray(value)

  def num_weights(self) -> int:
    return int(sum(a.size for a in self.arrays.values()))
