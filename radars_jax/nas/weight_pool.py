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

With `similarity` (FNAS's knowledge pool, block-level sharing), a weight
never trained is inherited from the trained one most like it, so that a
sampled op starts from trained weights whenever any similar op has been
trained (`most_similar`). A candidate must belong to the same op family (the
op's name with its kernel sizes left out: `sep_conv_3x3` and `sep_conv_5x5`,
`nor_conv_1x1` and `nor_conv_3x3`, `mbconv_3x3_e6` and `mbconv_7x7_e6`) and
have the same parameter name and shape, but for the kernel's two spatial
dimensions across kernel sizes (centre-cropped or zero-padded: a 1x1 kernel
padded to 3x3 computes the same function). Among candidates, in order:
  1. the same op on the same edge of another cell (cells of one stage see
     the same shapes and play the same part);
  2. the same op on another edge of the same cell;
  3. the same op on another edge of another cell;
  4. another kernel size of the family on the same edge, same cell;
  5. another kernel size anywhere (same edge first, then same cell);
ties broken by the path's name, so that the choice is deterministic.
"""
from __future__ import annotations

import re
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
  """Host-side {path: array} store with hit/miss counts. `similarity`: a
  weight the pool lacks is inherited from the most similar one it has (the
  module's docstring); `inherited` counts them by kind."""

  def __init__(self, arrays: dict[str, np.ndarray] | None = None, similarity: bool = False):
    self.arrays: dict[str, np.ndarray] = dict(arrays or {})
    self.similarity = similarity
    self.hits = 0
    self.misses = 0
    self.inherited: dict[str, int] = {}

  def __len__(self) -> int:
    return len(self.arrays)

  def select(self, template) -> Any:
    """`template`'s tree with every leaf the pool has replaced by the pool's
    value (shapes must agree); with `similarity` the others inherit from the
    most similar trained weight; the rest keep the template's (fresh)
    values."""
    out = {}
    index = None
    for path, value in canonical(template).items():
      stored = self.stored(path)
      if stored is not None and stored.shape == tuple(value.shape):
        out[path] = stored
        self.hits += 1
        continue
      if self.similarity:
        index = family_index(self.trained_paths()) if index is None else index
        found = most_similar(path, tuple(value.shape), index, self.stored)
        if found is not None:
          source, kind = found
          out[path] = fit_kernel(self.stored(source), tuple(value.shape))
          self.inherited[kind] = self.inherited.get(kind, 0) + 1
          continue
      out[path] = value
      self.misses += 1
    return restack(out, template)

  def write_back(self, params) -> None:
    for path, value in canonical(jax.device_get(params)).items():
      self.store(path, value)

  def stored(self, path: str):
    """The pool's array at `path` (a per-edge path), or None."""
    return self.arrays.get(path)

  def trained_paths(self) -> list[str]:
    """The paths `stored` answers."""
    return list(self.arrays)

  def store(self, path: str, value) -> None:
    self.arrays[path] = np.asarray(value)

  def num_weights(self) -> int:
    return int(sum(a.size for a in self.arrays.values()))


# ---------------------------------------------------------------------------
# Similarity (the knowledge pool)
# ---------------------------------------------------------------------------

_KERNEL_SIZE = re.compile(r"\d+x\d+")


def op_family(op: str) -> str:
  """`op` without its kernel sizes: `sep_conv_5x5` -> `sep_conv_k`."""
  return _KERNEL_SIZE.sub("k", op)


def _parts(path: str) -> tuple[str, str, str, str] | None:
  """(cell, edge, op, the rest) of an op's weight path, else None."""
  parts = path.split("/")
  if len(parts) < 4 or not parts[1].startswith("edge_"):
    return None
  return parts[0], parts[1], parts[2], "/".join(parts[3:])


def family_index(paths) -> dict[tuple[str, str], list[tuple[str, str, str, str]]]:
  """{(op family, the rest): [(cell, edge, op, path), ...]} of `paths`."""
  index: dict[tuple[str, str], list] = {}
  for path in sorted(paths):
    parts = _parts(path)
    if parts is not None:
      cell, edge, op, rest = parts
      index.setdefault((op_family(op), rest), []).append((cell, edge, op, path))
  return index


def _fits(stored_shape, shape) -> bool:
  """Equal, or a 4-D kernel whose spatial dimensions alone differ."""
  return stored_shape == shape or (len(shape) == 4 and len(stored_shape) == 4
                                   and stored_shape[2:] == shape[2:])


def most_similar(path: str, shape, index, stored) -> tuple[str, str] | None:
  """(the trained path `path` inherits from, its kind) by the module's
  order, or None; `stored(path)` gives a candidate's array."""
  parts = _parts(path)
  if parts is None:
    return None
  cell, edge, op, rest = parts
  best = None
  for c, e, o, candidate in index.get((op_family(op), rest), []):
    if candidate == path or not _fits(tuple(stored(candidate).shape), shape):
      continue
    same_op, same_edge, same_cell = o == op, e == edge, c == cell
    if same_op and same_edge:
      rank, kind = 0, "same_op_other_cell"
    elif same_op:
      rank, kind = (1, "same_op_other_edge") if same_cell else (2, "same_op_elsewhere")
    else:
      rank = 3 if same_edge and same_cell else (4 if same_edge else 5 if same_cell else 6)
      kind = "other_kernel_size"
    if best is None or rank < best[0]:
      best = (rank, candidate, kind)
  return None if best is None else (best[1], best[2])


def fit_kernel(array, shape) -> np.ndarray:
  """`array` centre-cropped or zero-padded in its spatial (first two)
  dimensions to `shape`."""
  array = np.asarray(array)
  if array.shape == tuple(shape):
    return array
  out = np.zeros(shape, array.dtype)
  src, dst = [], []
  for have, want in zip(array.shape[:2], shape[:2]):
    if have >= want:
      start = (have - want) // 2
      src.append(slice(start, start + want))
      dst.append(slice(0, want))
    else:
      start = (want - have) // 2
      src.append(slice(0, have))
      dst.append(slice(start, start + have))
  out[tuple(dst)] = array[tuple(src)]
  return out
