"""The performance options a search leaves to the library: what `auto`
picks for the platform and the method.

A performance option changes how a step computes, never what (the same
numbers to float rounding). Four are `auto` by default, each picked where
measurements show it wins (docs/performance.md, "Performance options" and
"Defaults by platform"):
- `supernet.depthwise_impl` (and `train.depthwise_impl`): `shifted` on the
  CPU, where XLA's grouped convolutions run many times slower forward and
  backward; `xla` on GPU and TPU (`radars_jax.nas.depthwise`). Except the
  subspace searches (`radars`, `rl`, `random`): `xla` everywhere, as their
  cost model sizes subspaces from single-op traces, which add up to XLA's
  bytes of `xla` kernels but not of `shifted` ones; but on the CPU in the
  mobile space, whose MBConv blocks run their depthwise convs inside the
  shared program's switches, `shifted`: a switched step on digits took
  5.5 s with `xla` kernels and 0.08 s with `shifted` ones (every step's
  compiled bytes are still checked against the budget). Agent searches
  (`task=agents`, `a2d` and `radars`) pick as whole-space DNAS: a PPO
  update with `xla` kernels took 12x as long on the CPU, and the budget
  holds whatever the estimates (every update's bytes are read from XLA).
- `supernet.scan_edges`: on for whole-space DNAS (`darts`,
  `single_darts`) where every op of the space has a stacked form (a much
  shorter compile, a fraction of the bytes); off for the subspace
  searches, whose sampled edges differ (they could not scan), and for the
  mobile space, a chain of blocks with no cell to scan.
- `supernet.scan_switched`: on for DARTS cells, whose shared programs
  (`radars`, `rl`, `random`) compile several times faster scanned, in
  fewer bytes; off for NB-201 cells, where scanning won nothing.
- `supernet.compute_dtype` (and `train.compute_dtype`): mixed precision
  (`radars_jax.precision`), bfloat16 activations on GPU and TPU, float32
  on the CPU, where bfloat16 steps ran slower. Not for agent searches,
  whose networks are small and run in float32.
A value set in the config (or on the command line) is kept as it is. The
picks are printed once when a run starts and recorded in its summary.json
(`performance_options`).
"""
from __future__ import annotations

import jax
import ml_collections

from radars_jax import precision
from radars_jax.dnas.steps import DNAS_METHODS
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib

AUTO = "auto"
# the options `auto` may pick, as config paths
AUTO_OPTIONS = ("supernet.depthwise_impl", "supernet.scan_edges", "supernet.scan_switched",
                "supernet.compute_dtype", "train.depthwise_impl", "train.compute_dtype")


def is_auto(value) -> bool:
  """`auto`: the string for the implementations, None for the switches."""
  return value is None or value == AUTO


def is_agent_search(config) -> bool:
  """`task=agents` (radars_jax.agents): no scanned or switched cells."""
  return config.get("task") == "agents"


def pick(name: str, config, backend: str) -> object:
  """What `auto` means for option `name` of `config` on `backend`."""
  if (name == "supernet.depthwise_impl" and config.method not in DNAS_METHODS
      and not is_agent_search(config)
      and not (backend == "cpu" and spaces_lib.space_from_config(config.space).kind == "mobile")):
    return "xla"
  if name.endswith("depthwise_impl"):
    return "shifted" if backend == "cpu" else "xla"
  if name == "supernet.scan_edges":
    if config.method not in DNAS_METHODS:
      return False
    space = spaces_lib.space_from_config(config.space)
    return space.kind != "mobile" and not ops_lib.without_stacked_form(space.op_names)
  if name == "supernet.scan_switched":
    return spaces_lib.space_from_config(config.space).kind == "darts_cell"
  if name.endswith("compute_dtype"):
    return "float32" if is_agent_search(config) else precision.pick(backend)
  raise KeyError(f"{name} is not an auto performance option")


def resolve(config, block: str = "supernet",
            backend: str | None = None) -> tuple[ml_collections.ConfigDict, dict]:
  """A copy of `config` with each `auto` option of `block` (`supernet` for
  searches, `train` for retraining) set to its pick on `backend` (default:
  JAX's), and those options' values with whether the library picked
  them: {name: {"value": v, "picked": bool}}."""
  backend = backend or jax.default_backend()
  resolved = config.copy_and_resolve_references()
  options = {}
  for name in AUTO_OPTIONS:
    if not name.startswith(block + "."):
      continue
    field = name.split(".")[1]
    if block not in resolved or field not in resolved[block]:
      continue
    value = resolved[block][field]
    picked = is_auto(value)
    if picked:
      value = pick(name, resolved, backend)
      resolved[block][field] = value
    if _applies(name, resolved):
      options[name] = {"value": value, "picked": picked}
  return resolved, options


def _applies(name: str, config) -> bool:
  """Whether option `name` changes anything in `config`'s run: scanned
  edges are for whole-space DNAS, switched ones for subspace searches,
  neither for agent searches."""
  if is_agent_search(config) and (name.startswith("supernet.scan")
                                  or name == "supernet.compute_dtype"):
    return False
  if name == "supernet.scan_edges":
    return config.method in DNAS_METHODS
  if name == "supernet.scan_switched":
    return config.method not in DNAS_METHODS
  return True


def describe(options: dict, run: str, backend: str | None = None) -> str | None:
  """One line naming what `auto` picked for `run` (as "method=radars"),
  None where nothing was left to it."""
  picked = [f"{name}={entry['value']}" for name, entry in options.items() if entry["picked"]]
  if not picked:
    return None
  return (f"radars_jax: on {backend or jax.default_backend()}, {run}: "
          f"{', '.join(picked)} (auto; docs/performance.md)")


def start_run(config, block: str = "supernet") -> tuple[ml_collections.ConfigDict, dict]:
  """`resolve`, with `describe`'s line printed: what a run does first."""
  resolved, options = resolve(config, block)
  line = describe(options, f"method={config.method}" if block == "supernet" else "mode=train")
  if line:
    print(line, flush=True)
  return resolved, options
