"""Command line of radars_jax.

    python -m radars_jax.main --config configs/digits.py --workdir runs/digits
    python -m radars_jax.main --config configs/cifar.py --workdir runs/cifar \\
        --config.dnas.epochs=3

`config.mode`: `search` (default), `describe` (one JSON object about the
space and supernet; nothing is trained), `train` (retrain a genotype).
Bad input ends with one line on stderr and exit status 2.
"""
import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from radars_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), fields overridable as --config.a.b=v.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")


def run(config, workdir):
  """Runs `config.mode`; returns its summary dict."""
  if config.mode == "tabular":  # table look-ups only: no supernet, no data
    from radars_jax import tabular  # pylint: disable=import-outside-toplevel
    return tabular.run_from_config(config, workdir)
  from radars_jax import search  # pylint: disable=import-outside-toplevel
  if config.mode == "describe":
    return search.describe(config)
  if config.mode == "search":
    return search.run_search(config, workdir)
  if config.mode == "train":
    from radars_jax import train  # pylint: disable=import-outside-toplevel
    return train.run_training(config, workdir)
  raise UserError(f"unknown mode {config.mode!r}; known modes: search, describe, train, tabular")


def enable_compilation_cache(workdir) -> None:
  """JAX's persistent compilation cache in WORKDIR/jax_cache: a resumed or
  repeated run loads its compiled steps instead of compiling again."""
  import os  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  if not workdir or (os.path.exists(workdir) and not os.path.isdir(workdir)):
    return
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    print("radars_jax: error: --config=configs/NAME.py is required", file=sys.stderr)
    sys.exit(2)
  try:
    if config.get("compilation_cache", True) and config.mode != "describe":
      enable_compilation_cache(_WORKDIR.value)
    result = run(config, _WORKDIR.value)
  except UserError as e:
    print(f"radars_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  if config.mode == "describe":
    print(json.dumps(result, indent=2))
  else:
    brief = {k: v for k, v in result.items()
             if k not in ("alphas", "subspace", "choice_points", "space_ops")}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
  app.run(main)
