"""What a search measures before it trains, kept between runs.

A RADARS search first measures: the cost model traces every op
(`radars.cost_model`) and calibrates on compiles that are only read for
their bytes (`radars.programs.calibrate`). JAX's persistent compilation
cache keeps XLA's part of a compile, but a new process still traces and
lowers every program, so a rerun would spend seconds measuring what it
measured before. `Measurements` keeps those results as small JSON files in
a folder of the compilation cache, each under a key made of everything its
value depends on:

- the inputs the caller names (the run's config, the devices, the subspace);
- the source of the radars_jax package (any edit measures again);
- the versions of jax, jaxlib, flax and optax, and the backend and device kind.

The folder is in the compilation cache's (`compilation_cache_dir`, which
the command line sets to the user's cache directory; config
`compilation_cache=False` turns both off). A file that cannot be read is
measured again and rewritten; writes are atomic, so runs may share it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax

FOLDER = "radars_jax_measurements"
# config fields that change no measurement (a rerun with another seed is
# the same search to measure)
UNMEASURED_FIELDS = ("seed", "progress_bar", "log_every", "compilation_cache_dir")


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
  """SHA-256 of every .py file of the radars_jax package (path and bytes)."""
  root = Path(__file__).resolve().parent
  digest = hashlib.sha256()
  for path in sorted(root.rglob("*.py")):
    digest.update(str(path.relative_to(root)).encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()


def environment() -> dict:
  """The versions and the device kind a measurement depends on."""
  import flax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "backend": jax.default_backend(),
          "device_kind": device.device_kind, "source": source_digest()}


def config_key(config) -> dict:
  """The config as the key sees it: every field but `UNMEASURED_FIELDS`."""
  values = json.loads(config.to_json_best_effort())
  return {k: v for k, v in values.items() if k not in UNMEASURED_FIELDS}


class Measurements:
  """A folder of measurements (`lookup` / `store`), or none (`folder`
  None: every lookup misses and nothing is stored)."""

  def __init__(self, folder: str | os.PathLike | None):
    self.folder = None if folder is None else Path(folder)

  @classmethod
  def for_config(cls, config) -> "Measurements":
    """In the compilation cache's folder, `config.compilation_cache_dir`
    (which the command line fills in), while `config.compilation_cache` is
    on; otherwise none."""
    cache = config.get("compilation_cache_dir")
    if not cache or not config.get("compilation_cache", True):
      return cls(None)
    return cls(os.path.join(os.path.expanduser(cache), FOLDER))

  def _path(self, kind: str, inputs) -> Path:
    key = json.dumps({"kind": kind, "inputs": inputs, "environment": environment()},
                     sort_keys=True, default=str)
    return self.folder / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

  def lookup(self, kind: str, inputs) -> Any | None:
    """The value stored for (`kind`, `inputs`), or None."""
    if self.folder is None:
      return None
    try:
      return json.loads(self._path(kind, inputs).read_text())["value"]
    except (OSError, ValueError, KeyError):
      return None

  def store(self, kind: str, inputs, value) -> None:
    """Keeps `value` (JSON) for (`kind`, `inputs`); a folder that cannot be
    written is skipped (a measurement is worth keeping, not failing for)."""
    if self.folder is None:
      return
    text = json.dumps({"kind": kind, "value": value})
    tmp = None
    try:
      self.folder.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
      with os.fdopen(fd, "w") as f:
        f.write(text)
      os.replace(tmp, self._path(kind, inputs))
    except OSError:
      if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)

  def get(self, kind: str, inputs, measure: Callable[[], Any]) -> tuple[Any, bool]:
    """(the stored value, True), or (`measure()`, False) after storing it."""
    value = self.lookup(kind, inputs)
    if value is not None:
      return value, True
    value = measure()
    self.store(kind, inputs, value)
    return value, False
