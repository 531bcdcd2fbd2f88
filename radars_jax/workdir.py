"""The workdir: checked before use, written atomically, never deleted."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from radars_jax import distributed
from radars_jax.errors import UserError


def prepare(workdir: str | os.PathLike | None) -> Path:
  """Creates the workdir if needed; refuses a path that is not a directory."""
  if not workdir:
    raise UserError("no workdir: pass --workdir=DIR")
  path = Path(workdir).expanduser()
  if path.exists() and not path.is_dir():
    raise UserError(f"workdir {str(path)!r} exists and is not a directory")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {str(path)!r}: {e.strerror}") from None
  return path


def _default(obj):
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return float(obj)
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, Path):
    return str(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes JSON via a temporary file and a rename: never half a file.
  In a run of several processes only process 0 writes
  (`radars_jax.distributed`)."""
  if not distributed.is_primary():
    return
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, default=_default) + "\n")
  os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(Path(path).read_text())
