"""Command line of radars_jax.

    python -m radars_jax.main --config configs/digits.py --workdir runs/digits
    python -m radars_jax.main --config configs/cifar.py --workdir runs/cifar \\
        --config.dnas.epochs=3

`config.mode`: `search` (default), `describe` (one JSON object about the
space and supernet; nothing is trained), `train` (retrain a genotype),
`tabular` (search strategies on a NAS-Bench-201 table).
Bad input (a config file that cannot be loaded, an unknown flag or field, a
value of the wrong type, out of range or naming nothing known, a missing
file) ends with one line on stderr and exit status 2, before the workdir is
touched (`radars_jax.config_check`); what the run wrote is taken back if it
stops on bad input found later (`_WorkdirGuard`).
"""
import json
import os
import re
import shutil
import sys

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from radars_jax import time_limit
from radars_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), fields overridable as --config.a.b=v.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")


def run(config, workdir):
  """Runs `config.mode`; returns its summary dict. (The library is imported
  here, not at the top: `--help` and bad flags answer without loading JAX,
  and a mode loads only what it runs.)"""
  from radars_jax import config_check  # pylint: disable=import-outside-toplevel
  from radars_jax import distributed  # pylint: disable=import-outside-toplevel
  from radars_jax import memory  # pylint: disable=import-outside-toplevel
  distributed.initialize(config)   # (before anything asks JAX for its devices)
  memory.fill_budget_from_device(config)
  config_check.check_config(config)
  if config.mode == "tabular":  # table look-ups only: no supernet, no data
    from radars_jax.tabular import run as tabular_run  # pylint: disable=import-outside-toplevel
    return tabular_run.run_from_config(config, workdir)
  if config.task == "agents" and config.mode in ("search", "describe"):   # no data
    from radars_jax.agents import run as agents_run  # pylint: disable=import-outside-toplevel
    if config.mode == "describe":
      return agents_run.describe(config)
    if config.method == "radars":
      from radars_jax.agents import radars_search  # pylint: disable=import-outside-toplevel
      return radars_search.run_search(config, workdir)
    return agents_run.run_search(config, workdir)
  from radars_jax.dnas import steps as dnas_steps  # pylint: disable=import-outside-toplevel
  from radars_jax.dnas import search  # pylint: disable=import-outside-toplevel
  if config.mode == "describe":
    return search.describe(config)
  if config.mode == "search":
    if config.method in dnas_steps.DNAS_METHODS:
      return search.run_search(config, workdir)
    from radars_jax.radars import loop as radars_loop  # pylint: disable=import-outside-toplevel
    return radars_loop.run_search(config, workdir)
  if config.mode == "train":
    from radars_jax.retrain import train  # pylint: disable=import-outside-toplevel
    return train.run_training(config, workdir)
  raise UserError(f"unknown mode {config.mode!r}; known modes: search, describe, train, tabular")


def genotype_line(genotype: dict) -> str:
  """A genotype on one line: NAS-Bench-201's arch string, a mobile
  network's blocks (`k5e6`, `-` skipped; stages split by `|`), or each
  DARTS cell's nodes (`op input`, two per node, nodes split by `|`)."""
  if "arch_str" in genotype:
    return genotype["arch_str"]
  if "ops" in genotype:
    return " ".join(genotype["ops"])
  if "blocks" in genotype:
    from radars_jax.report import cells  # pylint: disable=import-outside-toplevel
    def short(op):   # mbconv_5x5_e6 -> k5e6
      return "-" if op == "none" else "k{}e{}".format(*cells.kernel_and_expansion(op))
    return " | ".join(" ".join(map(short, stage)) for stage in cells.mobile_stages(genotype))
  cells = []
  for cell in ("normal", "reduce"):
    pairs = [f"{op} {src}" for op, src in genotype.get(cell, [])]
    nodes = [", ".join(pairs[i:i + 2]) for i in range(0, len(pairs), 2)]
    cells.append(f"{cell}: " + " | ".join(nodes))
  return "; ".join(cells)


def _mb(num_bytes) -> str:
  from radars_jax import memory  # pylint: disable=import-outside-toplevel
  return memory.format_gb(float(num_bytes))


def console_summary(mode: str, result: dict, workdir) -> str:
  """What a finished run prints: a few lines for a person (summary.json or
  eval.json in the workdir has everything)."""
  path = os.path.join(str(workdir), "")
  if mode == "train":
    lines = [f"radars_jax: trained the genotype's {result['network']} network on "
             f"{result['dataset']} for {result['epochs']} epochs ({result['steps']} steps)",
             f"  genotype  {genotype_line(result['genotype'])}",
             f"  accuracy  {100 * result['test_accuracy']:.2f}% on the test split",
             f"  network   {result['weights']:,} weights, {result['flops']:,} multiply-adds "
             "per image",
             f"  time      {result['seconds']:.1f} s"]
    if result.get("resumed_from_step") is not None:
      lines[-1] += f" (resumed from step {result['resumed_from_step']})"
    lines.append(f"  outputs   {path}report/index.html, {path}eval.json")
    return "\n".join(lines)
  if mode == "tabular":
    lines = [f"radars_jax: {result['seeds']} seeds x {result['queries']} queries on "
             f"{result['table']} (table best {result['metric']} {result['table_best_metric']:.3f})"]
    for name, stats in result["methods"].items():
      lines.append(f"  {name:<10} best {result['metric']} {stats['best_metric_mean']:.3f} "
                   f"+- {stats['best_metric_std']:.3f}, its {result['report']} "
                   f"{stats['best_report_mean']:.3f}")
    lines.append(f"  outputs   {result['plot']}, {path}summary.json, {result['results']}")
    return "\n".join(lines)
  if result.get("stopped"):
    return time_limit.stopped_console(result, workdir)
  if result.get("agents"):
    return agents_summary(result, path)
  lines = [f"radars_jax: {result['method']} search on {result['space']} / "
           f"{result['dataset']} finished (DNAS: {result['mode']})",
           f"  genotype  {genotype_line(result['genotype'])}",
           f"  accuracy  {100 * result['val_accuracy']:.2f}% on the held-out training "
           "examples (the derived cell, supernet weights)"]
  memory_line = f"  memory    worst train step {_mb(result['step_bytes'])}"
  if result.get("memory_budget_bytes") is not None:
    memory_line += f", budget {_mb(result['memory_budget_bytes'])}"
    if "over_budget_steps" in result:
      memory_line += f", {result['over_budget_steps']} steps over it"
  lines.append(memory_line)
  if "iterations" in result:
    runs = result.get("subspace_runs", [])
    lines.append(f"  search    {result['iterations']} iterations, {len(runs)} DNAS runs "
                 f"({result.get('shared_program_runs', 0)} on a shared program)")
  lines.append(f"  time      search {result['search_seconds']:.1f} s, "
               f"{result['compile_loop_seconds']:.1f} s of it compiling or waiting for "
               "compiles")
  lines.append(f"  outputs   {path}report/index.html, {path}summary.json")
  return "\n".join(lines)


def agents_summary(result: dict, path: str) -> str:
  """The lines of a finished task=agents run: each agent's return and cost."""
  lines = [f"radars_jax: {result['method']} search on {result['space']} / {result['env']} "
           "finished",
           f"  genotype  {genotype_line(result['genotype'])}"]
  for name, agent in result["agents"].items():
    lines.append(f"  {name:<9} return {agent['mean_return']:.2f} +- {agent['std_return']:.2f} "
                 f"({agent['episodes']} episodes), {agent['macs']:,} multiply-adds, "
                 f"{agent['params']:,} weights")
  lines.append(f"  time      {result['search_seconds']:.1f} s")
  lines.append(f"  outputs   {path}report/index.html, {path}summary.json")
  return "\n".join(lines)


CACHE_DIR_ENV = "RADARS_JAX_CACHE_DIR"


def compilation_cache_dir(config) -> str:
  """Where the command line keeps JAX's persistent compilation cache:
  `config.compilation_cache_dir`, else $RADARS_JAX_CACHE_DIR, else the
  user's cache directory ($XDG_CACHE_HOME, default ~/.cache) /radars_jax/xla.
  One cache for every run (the workdir keeps only what a resume needs)."""
  if config.get("compilation_cache_dir"):
    return os.path.expanduser(config.compilation_cache_dir)
  if os.environ.get(CACHE_DIR_ENV):
    return os.path.expanduser(os.environ[CACHE_DIR_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "radars_jax", "xla")


def enable_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in `path`: a repeated or resumed
  run loads its compiled programs instead of compiling them again. Every
  program that took a tenth of a second or more to compile is kept (the
  searches compile dozens of small ones besides their train steps)."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _fail(message: str) -> None:
  print(f"radars_jax: error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def _config_file(argv) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "the config file"


def _flag_error(error: Exception, argv) -> str:
  """One line for a command line that cannot be parsed."""
  if isinstance(error, OSError):   # the config file itself
    return _load_error(error, argv)
  if isinstance(error, (KeyError, AttributeError)):   # an override of no field
    key = str(error).strip("\"'")
    key = key.split("'")[0] or key
    for arg in argv:
      match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
      if match and key in match.group(1).split("."):
        return (f"--config.{match.group(1)}: {_config_file(argv)} has no field {key!r} "
                "(python -m radars_jax.main --config FILE --config.mode=describe, or the "
                "config file, lists the fields)")
    return f"{_config_file(argv)} has no field {key!r}"
  text = str(error).strip()
  if isinstance(error, flags.Error):
    return text
  # an error in the config file (config_flags adds its traceback to some)
  return f"--config {_config_file(argv)}: {type(error).__name__}: {text.splitlines()[-1]}"


def _load_error(error: Exception, argv) -> str:
  path = _config_file(argv)
  if not os.path.isfile(path.split(":", 1)[0]):
    return f"--config {path}: no such file"
  return f"--config {path}: cannot load it ({type(error).__name__}: {error})"


# `--config.a.b=None`: sets a field whose value may be None (an optional
# one, such as a config file's `hardware.target`) back to None; absl's
# parsers take only values of the field's type, so these are set after.
_UNSET = re.compile(r"^--config\.([A-Za-z_][\w.]*)=None$")


def parse_flags(argv):
  """absl's flag parsing, where every error is one line and exit status 2.
  Returns the remaining arguments, the `--config.a.b=None` ones included."""
  unset = [arg for arg in argv[1:] if _UNSET.match(arg)]
  try:
    return flags.FLAGS([arg for arg in argv if arg not in unset]) + unset
  except Exception as e:  # pylint: disable=broad-except  # flags.Error, the overrides' own
    _fail(_flag_error(e, argv))
  return None


def unset_fields(config, args) -> None:
  """Sets each `--config.a.b=None` of `args` on `config`; a field that is not
  there or cannot be None is a `UserError`."""
  for arg in args:
    path = _UNSET.match(arg).group(1)
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise UserError(f"config.{path} is not a radars_jax config field")
    try:
      node[leaf] = None
    except (TypeError, ValueError):
      raise UserError(f"config.{path} cannot be None (its value is a "
                      f"{type(node[leaf]).__name__})") from None


class _WorkdirGuard:
  """What a run adds to its workdir, taken back when the run stops on bad
  input found after it started writing (a dataset that cannot be read, a
  budget no step fits): a workdir it created is removed, in one that
  existed the entries it added are removed and `config.json` is put back."""

  def __init__(self, workdir):
    self.path = workdir
    self.existed = bool(workdir) and os.path.lexists(workdir)
    self.entries = set(os.listdir(workdir)) if self.existed and os.path.isdir(workdir) else None
    config_json = os.path.join(workdir, "config.json") if workdir else None
    self.config_json = None
    if self.entries is not None and os.path.isfile(config_json):
      with open(config_json, "rb") as f:
        self.config_json = f.read()

  def undo(self) -> None:
    if not self.path or not os.path.isdir(self.path):
      return
    if not self.existed:
      shutil.rmtree(self.path, ignore_errors=True)
      return
    if self.entries is None:
      return
    for name in set(os.listdir(self.path)) - self.entries:
      target = os.path.join(self.path, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target, ignore_errors=True)
      else:
        os.remove(target)
    if self.config_json is not None:
      with open(os.path.join(self.path, "config.json"), "wb") as f:
        f.write(self.config_json)


def main(argv):
  unexpected = [arg for arg in argv[1:] if not _UNSET.match(arg)]
  if unexpected:
    _fail(f"unexpected arguments: {' '.join(unexpected)}")
  config = _CONFIG.value
  if config is None:
    _fail("--config=configs/NAME.py is required")
  try:
    mode = config.mode
  except OSError as e:   # config_flags defers a failed load to the first use
    _fail(_load_error(e, sys.argv))
  try:
    unset_fields(config, argv[1:])
  except UserError as e:
    _fail(str(e))
  workdir = _WORKDIR.value
  guard = _WorkdirGuard(workdir)
  try:
    if config.compilation_cache and mode != "describe":
      # (the search keeps its measurements there too: radars_jax.measurements)
      config.compilation_cache_dir = compilation_cache_dir(config)
      enable_compilation_cache(config.compilation_cache_dir)   # made by JAX's first compile
    result = run(config, workdir)
  except UserError as e:
    guard.undo()
    _fail(str(e))
  if mode == "describe":
    print(json.dumps(result, indent=2))
  else:
    print(console_summary(mode, result, workdir))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
