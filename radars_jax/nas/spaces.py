"""Search spaces as data: choice points, candidate ops, subspaces, genotypes.

A `SearchSpace` is a list of choice points, each with candidate op names
from `radars_jax.nas.ops`. A *subspace* is, per choice point, the sorted tuple
of active op indices: a static, hashable value that selects which op modules
the supernet builds (`Subspace`). A *genotype* is the discrete architecture
derived from a search, kept as a JSON-serialisable dict.

Spaces:
- `darts`: the DARTS cell space: 14 edges in the normal cell and 14 in the
  reduction cell (28 choice points), the 8 DARTS primitives on each.
- `darts_large`: the same cells with all 23 registry ops (the 8 DARTS ones
  first, so `num_ops=N` takes the first N).
- `nb201`: the NAS-Bench-201 cell: 6 edges of a 4-node DAG, 5 ops.
- `mobile`: the MNAS / ProxylessNAS macro space (`radars_jax.nas.mobile`):
  one choice point per MBConv block (21 by default), each of kernel 3/5/7
  and expansion 3/6, or `none` (the block skipped) except a stage's first.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from radars_jax.nas import ops as ops_lib
from radars_jax.errors import UserError

DARTS_PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
DARTS_LARGE_OPS = ops_lib.OP_NAMES  # the 8 DARTS primitives come first
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
MOBILE_OPS = ("mbconv_3x3_e3", "mbconv_3x3_e6", "mbconv_5x5_e3", "mbconv_5x5_e6",
              "mbconv_7x7_e3", "mbconv_7x7_e6", "none")
MOBILE_STAGE_BLOCKS = (4, 4, 4, 4, 4, 1)   # ProxylessNAS's mobile setting: 21 blocks

DARTS_STEPS = 4          # intermediate nodes per DARTS cell
NB201_NODES = 4          # nodes of the NAS-Bench-201 cell (node 0 is the input)

# Per choice point: sorted tuple of active op indices.
Subspace = tuple[tuple[int, ...], ...]


def darts_edges(steps: int = DARTS_STEPS) -> tuple[tuple[int, int], ...]:
  """(source state, target node) of each DARTS cell edge, in DARTS order.

  States 0 and 1 are the cell inputs; node i is state i + 2.
  """
  return tuple((j, i + 2) for i in range(steps) for j in range(2 + i))


def nb201_edges(nodes: int = NB201_NODES) -> tuple[tuple[int, int], ...]:
  """(source node, target node) in NAS-Bench-201 arch_str order."""
  return tuple((j, i) for i in range(1, nodes) for j in range(i))


@dataclasses.dataclass(frozen=True)
class ChoicePoint:
  name: str                 # e.g. "normal/2->4"
  ops: tuple[str, ...]      # candidate op names


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  name: str
  kind: str                 # "darts_cell", "nb201_cell" or "mobile": which supernet
  choice_points: tuple[ChoicePoint, ...]
  stage_blocks: tuple[int, ...] = ()   # mobile: blocks per stage
  squeeze_excite: bool = False         # mobile: every MBConv squeezes and excites

  @property
  def num_choice_points(self) -> int:
    return len(self.choice_points)

  @property
  def max_ops(self) -> int:
    return max(len(cp.ops) for cp in self.choice_points)

  @property
  def op_names(self) -> tuple[str, ...]:
    """The candidate ops: the longest choice point's (every other choice
    point's ops are its first ones)."""
    return max((cp.ops for cp in self.choice_points), key=len)

  def full_subspace(self) -> Subspace:
    return tuple(tuple(range(len(cp.ops))) for cp in self.choice_points)

  def subspace_from_mask(self, mask) -> Subspace:
    """Subspace of the True entries of a [num_choice_points, max_ops] mask."""
    mask = np.asarray(mask, bool)
    return tuple(tuple(int(i) for i in np.flatnonzero(mask[c, :len(cp.ops)]))
                 for c, cp in enumerate(self.choice_points))

  def mask_from_subspace(self, subspace: Subspace) -> np.ndarray:
    mask = np.zeros((self.num_choice_points, self.max_ops), bool)
    for c, active in enumerate(subspace):
      mask[c, list(active)] = True
    return mask

  def op_names_of(self, subspace: Subspace) -> tuple[tuple[str, ...], ...]:
    """Per choice point, the names of the active ops."""
    return tuple(tuple(cp.ops[i] for i in active)
                 for cp, active in zip(self.choice_points, subspace))

  def check_subspace(self, subspace: Subspace, allow_empty: bool = False) -> Subspace:
    subspace = tuple(tuple(int(i) for i in active) for active in subspace)
    if len(subspace) != self.num_choice_points:
      raise ValueError(f"subspace has {len(subspace)} choice points, space "
                       f"{self.name} has {self.num_choice_points}")
    for cp, active in zip(self.choice_points, subspace):
      if not active and not allow_empty:
        raise ValueError(f"choice point {cp.name} has no active op")
      if tuple(sorted(set(active))) != active:
        raise ValueError(f"choice point {cp.name}: active ops {active} must be sorted and distinct")
      if active and not 0 <= active[0] <= active[-1] < len(cp.ops):
        raise ValueError(f"choice point {cp.name}: op index out of range in {active}")
    return subspace


SPACE_NAMES = ("darts", "darts_large", "nb201", "mobile")


def _select_ops(default: Sequence[str], ops, num_ops) -> tuple[str, ...]:
  if ops:
    names = [s.strip() for s in ops.split(",")] if isinstance(ops, str) else list(ops)
    return ops_lib.check_op_names(names)
  names = tuple(default)
  if num_ops is not None:
    if not 1 <= int(num_ops) <= len(names):
      raise UserError(f"space.num_ops={num_ops} must be between 1 and {len(names)}")
    names = names[:int(num_ops)]
  return ops_lib.check_op_names(names)


def parse_blocks(blocks) -> tuple[int, ...]:
  """The mobile space's blocks per stage: None (the default layout), a
  sequence or a comma-separated string of one count (at least 1) per stage."""
  if blocks is None:
    return MOBILE_STAGE_BLOCKS
  try:
    counts = tuple(int(b) for b in (blocks.split(",") if isinstance(blocks, str) else blocks))
  except ValueError:
    counts = ()
  stages = len(MOBILE_STAGE_BLOCKS)
  if len(counts) != stages or min(counts) < 1:
    raise UserError(f"space.blocks={blocks!r}: the mobile network has {stages} stages; give "
                    f"a block count of at least 1 for each, e.g. "
                    f"{','.join(map(str, MOBILE_STAGE_BLOCKS))}")
  return counts


def make_mobile_space(ops=None, num_ops=None, blocks=None,
                      squeeze_excite: bool = False) -> SearchSpace:
  """The mobile space: per stage, its first block chooses among the ops
  but `none` (it changes the width, so it cannot be skipped), the others
  among all of them; with `squeeze_excite` every MBConv block has SE."""
  names = _select_ops(MOBILE_OPS, ops, num_ops)
  if "none" in names[:-1]:
    raise UserError(f"space mobile: `none` (a skipped block) must come last in the ops, "
                    f"got {', '.join(names)}")
  first = tuple(n for n in names if n != "none")
  if not first:
    raise UserError("space mobile needs at least one op besides `none`")
  stage_blocks = parse_blocks(blocks)
  cps = tuple(ChoicePoint(f"stage{s + 1}/block{b + 1}", first if b == 0 else names)
              for s, n in enumerate(stage_blocks) for b in range(n))
  return SearchSpace("mobile", "mobile", cps, stage_blocks, bool(squeeze_excite))


def make_space(name: str, ops=None, num_ops=None, steps: int | None = None,
               blocks=None, squeeze_excite: bool = False) -> SearchSpace:
  """Builds a named space; `ops` (names, or comma-separated) or `num_ops`
  (the first N of the space's ops) change the candidate list; `steps`: the
  nodes of a DARTS cell (default DARTS_STEPS; the supernet's `steps` must
  match), refused for NAS-Bench-201, whose cell is fixed; `blocks`: the
  mobile space's blocks per stage (`parse_blocks`) and `squeeze_excite`,
  refused for the cells."""
  if (blocks is not None or squeeze_excite) and name != "mobile":
    raise UserError(f"space.blocks and space.squeeze_excite are the mobile space's; space "
                    f"{name!r} has cells")
  if name == "mobile":
    if steps is not None:
      raise UserError("space 'mobile' has blocks, not cells: steps is for DARTS cells")
    return make_mobile_space(ops, num_ops, blocks, squeeze_excite)
  if name in ("darts", "darts_large"):
    default = DARTS_PRIMITIVES if name == "darts" else DARTS_LARGE_OPS
    names = _select_ops(default, ops, num_ops)
    cps = tuple(ChoicePoint(f"{cell}/{src}->{dst}", names)
                for cell in ("normal", "reduce")
                for src, dst in darts_edges(DARTS_STEPS if steps is None else steps))
    return SearchSpace(name, "darts_cell", cps)
  if steps is not None:
    raise UserError(f"space {name!r} has a fixed cell: steps is for DARTS cells")
  if name == "nb201":
    names = _select_ops(NB201_OPS, ops, num_ops)
    cps = tuple(ChoicePoint(f"cell/{src}->{dst}", names) for src, dst in nb201_edges())
    return SearchSpace(name, "nb201_cell", cps)
  raise UserError(f"unknown space {name!r}; known spaces: {', '.join(SPACE_NAMES)}")


def space_from_config(space_config) -> SearchSpace:
  return make_space(space_config.name, space_config.ops, space_config.num_ops,
                    blocks=space_config.get("blocks"),
                    squeeze_excite=bool(space_config.get("squeeze_excite", False)))


# --------------------------------------------------------------------------
# Genotypes: the discrete architecture a search returns.
# --------------------------------------------------------------------------

def softmax(x) -> np.ndarray:
  """Softmax of one choice point's alphas, in float64 on the host."""
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


def op_weights(space: SearchSpace, subspace: Subspace, alphas) -> np.ndarray:
  """[num_choice_points, max_ops] softmax weights, NaN for inactive ops."""
  out = np.full((space.num_choice_points, space.max_ops), np.nan)
  for c, (active, alpha) in enumerate(zip(subspace, alphas)):
    if active:
      out[c, list(active)] = softmax(alpha)
  return out


def decision_margins(space: SearchSpace, subspace: Subspace, alphas) -> np.ndarray:
  """Per choice point, how clearly the alphas decided it: the strongest
  op's softmax weight less the runner-up's (0: a tie; NaN where fewer than
  two ops were searched)."""
  weights = op_weights(space, subspace, alphas)
  out = np.full(space.num_choice_points, np.nan)
  for c, active in enumerate(subspace):
    if len(active) >= 2:
      top = np.sort(weights[c, list(active)])[::-1]
      out[c] = top[0] - top[1]
  return out


def margin_summary(space: SearchSpace, subspace: Subspace, alphas) -> dict:
  """`decision_margins` for summary.json: per choice point (None where
  undecided by the alphas) and their median (None if none)."""
  margins = decision_margins(space, subspace, alphas)
  searched = margins[~np.isnan(margins)]
  return {"decision_margins": [None if np.isnan(m) else float(m) for m in margins],
          "decision_margin_median": float(np.median(searched)) if searched.size else None}


def derive_genotype(space: SearchSpace, subspace: Subspace, alphas) -> dict:
  """The discrete architecture from the alphas of a search in `subspace`.

  DARTS rule for DARTS cells: per node keep the two incoming edges whose
  strongest non-`none` op is strongest, each with that op (an edge whose
  only active op is `none` ranks last and keeps `none`). NAS-Bench-201:
  the strongest op per edge (`none` included, as in NAS-Bench-201).
  """
  weights = op_weights(space, subspace, alphas)
  if space.kind in ("nb201_cell", "mobile"):
    ops = [cp.ops[int(np.nanargmax(weights[c]))] for c, cp in enumerate(space.choice_points)]
    if space.kind == "mobile":
      return {"space": space.name, "blocks": ops, "stage_blocks": list(space.stage_blocks),
              "squeeze_excite": space.squeeze_excite}
    return {"space": space.name, "ops": ops, "arch_str": nb201_arch_str(ops)}
  edges = darts_edges()
  genotype = {"space": space.name}
  for cell_index, cell in enumerate(("normal", "reduce")):
    chosen = []
    offset = cell_index * len(edges)
    for node in range(2, DARTS_STEPS + 2):
      candidates = []
      for e, (src, dst) in enumerate(edges):
        if dst != node:
          continue
        c = offset + e
        cp = space.choice_points[c]
        best_op, best_w = "none", -np.inf
        for i in subspace[c]:
          if cp.ops[i] != "none" and weights[c, i] > best_w:
            best_op, best_w = cp.ops[i], weights[c, i]
        candidates.append((best_w, -src, best_op, src))
      candidates.sort(reverse=True)
      chosen.extend([[op, src] for _, _, op, src in sorted(candidates[:2], key=lambda t: t[3])])
    genotype[cell] = chosen
    genotype[f"{cell}_concat"] = list(range(2, DARTS_STEPS + 2))
  return genotype


def nb201_arch_str(ops: Sequence[str]) -> str:
  """NAS-Bench-201 notation: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|."""
  parts, e = [], 0
  for node in range(1, NB201_NODES):
    parts.append("|" + "|".join(f"{ops[e + j]}~{j}" for j in range(node)) + "|")
    e += node
  return "+".join(parts)


def genotype_subspace(space: SearchSpace, genotype: dict) -> Subspace:
  """The derived architecture as a subspace: one op on each kept edge and
  none on dropped ones. Run with `alphas=None` the supernet computes exactly
  the discrete network, with the supernet's (inherited) weights."""
  needed = {"nb201_cell": "ops", "mobile": "blocks"}.get(space.kind, "normal")
  if needed not in genotype:
    raise UserError(f"genotype {genotype.get('space', '?')!r} does not fit space "
                    f"{space.name!r} (it has no {needed!r} field)")
  if space.kind in ("nb201_cell", "mobile"):
    if len(genotype[needed]) != space.num_choice_points:
      raise UserError(f"genotype has {len(genotype[needed])} {needed}, space {space.name!r} "
                      f"has {space.num_choice_points} choice points")
    for cp, op in zip(space.choice_points, genotype[needed]):
      if op not in cp.ops:
        raise UserError(f"genotype op {op!r} is not a candidate of {cp.name} in space "
                        f"{space.name!r} ({', '.join(cp.ops)})")
    return tuple((cp.ops.index(op),) for cp, op in zip(space.choice_points, genotype[needed]))
  edges = darts_edges()
  subspace = [() for _ in space.choice_points]
  for cell_index, cell in enumerate(("normal", "reduce")):
    pairs = genotype[cell]
    for k, (op, src) in enumerate(pairs):
      node = 2 + k // 2
      c = cell_index * len(edges) + edges.index((int(src), node))
      ops = space.choice_points[c].ops
      if op not in ops:
        raise UserError(f"genotype op {op!r} is not in space {space.name!r}")
      subspace[c] = tuple(sorted(subspace[c] + (ops.index(op),)))
  return tuple(subspace)
