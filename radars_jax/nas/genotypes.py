"""Published genotypes by name, and loading a genotype from a name or a file.

Genotypes are plain JSON-serialisable dicts (see `radars_jax.nas.spaces`):

- DARTS cells: `{"space": "darts", "normal": [[op, input], ... 8],
  "normal_concat": [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}`;
  pair `2k, 2k+1` feeds node `k + 2`; inputs 0 and 1 are the cell inputs.
- NAS-Bench-201 cells: `{"space": "nb201", "ops": [6 op names], "arch_str"}`.
- Mobile networks: `{"space": "mobile", "blocks": [an op name per block],
  "stage_blocks": [blocks per stage], "squeeze_excite"}` (`none`: the
  block is skipped).

The DARTS cells are copied from the authors' public code: `DARTS_V1`
(first-order DARTS, quark0/darts `cnn/genotypes.py`), `DARTS_V2`
(second-order DARTS, 2.76% CIFAR-10 error, 3.3M weights) and `PC_DARTS`
(yuhuixu1993/PC-DARTS `PC_DARTS_cifar`, 2.57% error, 3.6M weights).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.tabular import table as table_lib
from radars_jax.errors import UserError


def _darts(normal, reduce, normal_concat=(2, 3, 4, 5), reduce_concat=(2, 3, 4, 5)) -> dict:
  return {"space": "darts",
          "normal": [[op, src] for op, src in normal], "normal_concat": list(normal_concat),
          "reduce": [[op, src] for op, src in reduce], "reduce_concat": list(reduce_concat)}


DARTS_V1 = _darts(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)])

DARTS_V2 = _darts(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])

PC_DARTS = _darts(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)])


def _mobilenet_v2_like() -> dict:
  """A hand-designed reference in the mobile space's 21 blocks: MobileNetV2's
  depth per stage (2, 3, 4, 3, 3, 1) of MBConv 3x3 blocks of expansion 6,
  the other blocks skipped, at this space's (ProxylessNAS's) widths."""
  depths = (2, 3, 4, 3, 3, 1)
  blocks = [op for depth, size in zip(depths, spaces_lib.MOBILE_STAGE_BLOCKS)
            for op in ["mbconv_3x3_e6"] * depth + ["none"] * (size - depth)]
  return {"space": "mobile", "blocks": blocks,
          "stage_blocks": list(spaces_lib.MOBILE_STAGE_BLOCKS), "squeeze_excite": False}


GENOTYPES: dict[str, dict] = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "PC_DARTS": PC_DARTS,
    "MOBILENET_V2_LIKE": _mobilenet_v2_like(),
}
GENOTYPE_NAMES = tuple(GENOTYPES)


def check_genotype(genotype, where: str = "genotype") -> dict:
  """Returns `genotype` if it is a well-formed DARTS or NAS-Bench-201
  genotype dict, else raises UserError saying what is wrong."""
  if not isinstance(genotype, dict):
    raise UserError(f"{where}: a genotype is a JSON object, got {type(genotype).__name__}")
  if "ops" in genotype:  # NAS-Bench-201
    ops = genotype["ops"]
    n = len(spaces_lib.nb201_edges())
    if not isinstance(ops, list) or len(ops) != n:
      raise UserError(f"{where}: a nb201 genotype has {n} ops, got {ops!r}")
    unknown = [op for op in ops if op not in spaces_lib.NB201_OPS]
    if unknown:
      raise UserError(f"{where}: op(s) {unknown} are not NAS-Bench-201 ops "
                      f"({', '.join(spaces_lib.NB201_OPS)})")
    out = dict(genotype)
    out.setdefault("space", "nb201")
    out["arch_str"] = spaces_lib.nb201_arch_str(ops)
    return out
  if "blocks" in genotype:  # mobile
    return _check_mobile(genotype, where)
  if "normal" not in genotype or "reduce" not in genotype:
    raise UserError(f"{where}: a genotype needs 'normal' and 'reduce' (DARTS cells), "
                    "'ops' (a NAS-Bench-201 cell) or 'blocks' (a mobile network)")
  out = dict(genotype)
  out.setdefault("space", "darts")
  for cell in ("normal", "reduce"):
    pairs = genotype[cell]
    if not isinstance(pairs, list) or not pairs or len(pairs) % 2:
      raise UserError(f"{where}: '{cell}' must be a list of [op, input] pairs, two per node")
    for k, pair in enumerate(pairs):
      node = 2 + k // 2
      if (not isinstance(pair, (list, tuple)) or len(pair) != 2
          or not isinstance(pair[1], int) or not 0 <= pair[1] < node):
        raise UserError(f"{where}: {cell}[{k}]={pair!r} must be [op name, input] with "
                        f"input in 0..{node - 1}")
      if pair[0] not in ops_lib.OPS:
        ops_lib.check_op_names([pair[0]])
    concat = genotype.get(f"{cell}_concat", list(range(2, 2 + len(pairs) // 2)))
    concat = [int(c) for c in concat]
    if not concat or not all(2 <= c < 2 + len(pairs) // 2 for c in concat):
      raise UserError(f"{where}: {cell}_concat={concat} must name nodes in "
                      f"2..{1 + len(pairs) // 2}")
    out[cell] = [[str(op), int(src)] for op, src in pairs]
    out[f"{cell}_concat"] = concat
  return out


def _check_mobile(genotype: dict, where: str) -> dict:
  """A mobile genotype: its layout, and its blocks' ops in the mobile space."""
  stage_blocks = spaces_lib.parse_blocks(genotype.get("stage_blocks"))
  blocks = genotype["blocks"]
  space = spaces_lib.make_mobile_space(blocks=stage_blocks)
  if not isinstance(blocks, list) or len(blocks) != space.num_choice_points:
    raise UserError(f"{where}: a mobile genotype of stage_blocks {list(stage_blocks)} has "
                    f"{space.num_choice_points} blocks, got {blocks!r}")
  for cp, op in zip(space.choice_points, blocks):
    if op not in cp.ops:
      raise UserError(f"{where}: block {cp.name} is {op!r}, not one of {', '.join(cp.ops)}")
  return {"space": "mobile", "blocks": [str(op) for op in blocks],
          "stage_blocks": list(stage_blocks),
          "squeeze_excite": bool(genotype.get("squeeze_excite", False))}


def is_nb201(genotype: dict) -> bool:
  return "ops" in genotype


def is_mobile(genotype: dict) -> bool:
  return "blocks" in genotype


def network_kind(genotype: dict) -> str:
  """Which network a genotype is retrained as: darts, nb201 or mobile."""
  return "nb201" if is_nb201(genotype) else "mobile" if is_mobile(genotype) else "darts"


def load_genotype(name_or_path: str) -> dict:
  """A genotype by name (`GENOTYPE_NAMES`), from a JSON file (a genotype, or
  a search `summary.json` holding one under "genotype"), or a NAS-Bench-201
  arch string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
  if not name_or_path or not isinstance(name_or_path, str):
    raise UserError(f"no genotype given (config.genotype={name_or_path!r}); use one of "
                    f"{', '.join(GENOTYPE_NAMES)} or a path to a genotype.json")
  if name_or_path in GENOTYPES:
    return copy.deepcopy(GENOTYPES[name_or_path])
  if name_or_path.startswith("|"):
    ops = [table_lib.NB201_OPS[i] for i in table_lib.ops_from_arch_str(name_or_path)]
    return check_genotype({"space": "nb201", "ops": ops}, name_or_path)
  path = Path(name_or_path).expanduser()
  if not path.is_file():
    raise UserError(f"unknown genotype {name_or_path!r}: not a published genotype "
                    f"({', '.join(GENOTYPE_NAMES)}), a NAS-Bench-201 arch string, "
                    "or an existing genotype.json")
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read genotype file {str(path)!r}: {e}") from None
  if isinstance(data, dict) and "genotype" in data and isinstance(data["genotype"], dict):
    data = data["genotype"]
  return check_genotype(data, str(path))
