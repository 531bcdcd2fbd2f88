"""One shared program per k against a program per subspace.

    python experiments/shared_programs.py --json experiments/results/shared_programs_digits_scan_switched_0.json

For k = 1, 2, 3 ops per choice point, on the digits quickstart's setting
(configs/digits.py: NB-201, 8 channels, batch 64, 8x8 images, Single-DARTS),
it compiles the RADARS loop's two kinds of train step and runs both on the
same subspace, the static worst case of k ops (the k costliest ops, by the
traced cost model, on every choice point):
- shared: the switched supernet's step (`SwitchedSupernet.program`), one
  program for every subspace of at most k ops;
- static: the subspace's own step (`Searcher.program`).
For each it prints XLA's bytes per step, the compile seconds and the median
milliseconds of `--steps` timed steps after two warm-up steps (each step
waited for: a benchmark, not the search loop). `--json OUT` writes the rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

from radars_jax.radars import cost_model as cost_lib
from radars_jax import performance
from radars_jax import parallel
from radars_jax.dnas import steps as dnas_steps
from radars_jax.dnas import search
from radars_jax.nas import spaces
from radars_jax.nas import supernet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, overrides: list[str]):
  """`get_config()` of the config file at `path`, with NAME=VALUE overrides."""
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:   # name=value, as on the main command line
    name, value = item.split("=", 1)
    node = config
    *parents, leaf = name.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else (
        value.lower() in ("1", "true", "yes"))
  return config


def time_steps(searcher, compiled, program, subspace, k: int, steps: int) -> float:
  """Median milliseconds of one train step on `subspace`."""
  weights, alphas = searcher.init_weights(program.model, subspace, jax.random.key(0), None)
  if k:
    slots = searcher.shared.slots(subspace, k)
    state = program.init_state(weights, supernet.to_slots(alphas, subspace, slots), slots)
  else:
    state = program.init_state(weights, alphas)
  gather = searcher.batch_fn("weights")
  key = jax.random.key(1)
  times = []
  for i in range(steps + 2):
    batch = jax.block_until_ready(gather(key, i))
    start = time.perf_counter()
    state, metrics = compiled.fn(state, batch, None)
    jax.block_until_ready(metrics)
    if i >= 2:
      times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def run(config, ks, steps: int) -> dict:
  mesh = parallel.make_mesh()
  data = search.load_search_data(config.data, mesh)
  space = spaces.space_from_config(config.space)
  config.method = "radars"
  config.radars.shared_programs = True
  config = performance.resolve(config)[0]   # the performance options a search picks
  per_device = int(config.data.batch_size) // int(mesh.devices.size)
  model = cost_lib.trace_cost_model(space, config.supernet, data.num_classes, data.image_shape,
                                    per_device)
  searcher = search.Searcher(config, mesh, data, space, slot_orders=model.slot_orders())
  alive = space.mask_from_subspace(space.full_subspace())
  rows = []
  for k in ks:
    subspace = space.subspace_from_mask(model.worst_case(alive, k))
    shared_program = searcher.shared.program(k, 100)
    shared = searcher.shared.compile_step(shared_program, k)
    static_program = searcher.program(subspace, 100)
    static = searcher.compile_step(static_program, subspace)
    row = {"k": k, "subspace": [list(a) for a in subspace],
           "shared_bytes": shared.bytes, "static_bytes": static.bytes,
           "shared_compile_seconds": shared.seconds, "static_compile_seconds": static.seconds,
           "shared_step_ms": time_steps(searcher, shared, shared_program, subspace, k, steps),
           "static_step_ms": time_steps(searcher, static, static_program, subspace, 0, steps)}
    rows.append(row)
    print(f"k={k}: shared {row['shared_bytes'] / 1e6:.2f} MB, compile "
          f"{row['shared_compile_seconds']:.1f} s, step {row['shared_step_ms']:.1f} ms | static "
          f"{row['static_bytes'] / 1e6:.2f} MB, compile {row['static_compile_seconds']:.1f} s, "
          f"step {row['static_step_ms']:.1f} ms", flush=True)
  return {"space": space.name, "dataset": data.name, "batch_size": searcher.batch_size,
          "channels": int(config.supernet.channels), "image_shape": list(data.image_shape),
          "devices": int(mesh.devices.size), "backend": jax.default_backend(),
          "timed_steps": steps, "rows": rows}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "digits.py"))
  parser.add_argument("--ks", default="1,2,3", help="ops per choice point, comma separated")
  parser.add_argument("--steps", type=int, default=20, help="timed steps per program")
  parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="config override, e.g. supernet.channels=4 (repeatable)")
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args(argv)
  try:
    ks = [int(k) for k in args.ks.split(",")]
    if min(ks) < 1 or args.steps < 1:
      raise ValueError("k and --steps must be at least 1")
    config = load_config(args.config, args.set)
    if dnas_steps.dnas_mode(config) != "single_level":
      raise ValueError("this benchmark times Single-DARTS steps (dnas.inner_mode=single_level)")
  except (ValueError, KeyError, AttributeError, FileNotFoundError) as e:
    print(f"shared_programs: error: {e}", file=sys.stderr)
    return 2
  result = run(config, ks, args.steps)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
