"""The weight pool: every op's weights, kept across subspaces.

Keys are parameter paths (`cell_3/edge_1_4/sep_conv_3x3/...`): the cell,
the edge (the choice point) and the op. A subspace's parameter tree is a
selection from the pool (ops seen before start from what they learned: every
reuse is a hit, as in FNAS's knowledge pool), and after a subspace is trained
its weights are written back. The pool lives in host memory, so device
memory holds only the active subspace.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import traverse_util


def flatten(params) -> dict[str, Any]:
  return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: dict[str, Any]):
  return traverse_util.unflatten_dict(flat, sep="/")


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
    flat = flatten(template)
    out = {}
    for path, value in flat.items():
      stored = self.arrays.get(path)
      if stored is not None and stored.shape == tuple(value.shape):
        out[path] = stored
        self.hits += 1
      else:
        out[path] = value
        self.misses += 1
    return unflatten(out)

  def write_back(self, params) -> None:
    for path, value in flatten(jax.device_get(params)).items():
      self.arrays[path] = np.asarray(value)

  def num_weights(self) -> int:
    return int(sum(a.size for a in self.arrays.values()))
