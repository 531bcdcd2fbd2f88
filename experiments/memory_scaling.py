"""Memory of one train step as the space grows: full DARTS against RADARS.

    python experiments/memory_scaling.py --small --json experiments/results/memory_scaling_small.json
    python experiments/memory_scaling.py --json experiments/results/memory_scaling_cifar.json   # CIFAR setting

For spaces of N = 8, 12, 16, 20 ops per edge (the 8 DARTS ops, then more
from `darts_large`), it compiles (on abstract inputs: nothing runs) the
train step of the full space and reads its bytes from XLA
(compiled for its bytes only: `dnas.bytes_only_compiler_options`),
and sizes a RADARS subspace to the budget: k = the largest number of ops per
edge whose *worst case* (the k costliest ops on every edge, by the per-op
cost model of `radars_jax.radars.cost_model`) fits, then compiles that worst case
too. Every subspace RADARS could sample at that k needs at most those bytes.
Both sides compile the same step, `--mode` (default `single_level`, the
RADARS inner search's default `dnas.inner_mode`; `first_order` is the
classic DARTS step: at the --small setting it needs nearly the
single-level step's bytes and compiles slower; docs/performance.md).

The per-op costs of the first N ops are the same for every N (same ops, same
shapes), so the cost model is traced and calibrated once, on the largest
space. Default: the CIFAR search setting (batch 64, 16 channels, 8 cells,
32x32 images, 12 GB). `--small`: 4 channels, 1 cell, 8x8 images, batch 16,
and (unless --budget_gb is given) a budget halfway between full DARTS's
bytes at the smallest and the largest N, so the larger spaces cross it. Prints a table, writes --json and a
plot (bytes against N with the budget as a line).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from radars_jax import performance
from radars_jax import config_defaults
from radars_jax.radars import cost_model as cost_lib
from radars_jax.dnas import steps as dnas_steps
from radars_jax import memory
from radars_jax import parallel
from radars_jax.dnas import search
from radars_jax.nas import spaces
from radars_jax.nas import supernet


def settings(small: bool, layers: int | None = None):
  config = config_defaults.base_config()
  config.dnas.max_program_ops = None   # measures whole spaces, however large their programs
  if small:
    config.supernet.channels, config.supernet.layers = 4, 1
    image_shape, batch = (8, 8, 3), 16
  else:
    config.supernet.channels, config.supernet.layers = 16, 8
    image_shape, batch = (32, 32, 3), 64
  if layers is not None:
    config.supernet.layers = layers
  # the performance options RADARS picks (its cost model's kernels; every
  # edge its own mixed op), for both columns
  config.method = "radars"
  return performance.resolve(config)[0], image_shape, batch


def compile_bytes(space, subspace, config, image_shape, batch, mesh,
                  mode: str = "single_level") -> tuple[int, float]:
  """XLA's bytes and the compile seconds of the DNAS train step in `mode`."""
  model = supernet.build_supernet(space, subspace, config.supernet, 10)
  program = dnas_steps.DnasProgram(model, mode, config.dnas, 1, mesh, (0.0,), (1.0,),
                                   compute_dtype=config.supernet.compute_dtype)
  compiled, _ = search.compile_subspace_step(program, subspace, image_shape, batch,
                                             bytes_only=True)
  return compiled.bytes, compiled.seconds


def run(ns, small: bool, budget_gb: float | None, log=print, layers: int | None = None,
        mode: str = "single_level") -> dict:
  config, image_shape, batch = settings(small, layers)
  mesh = parallel.make_mesh()
  compiled = {}   # each subspace once (the calibration's k = 2 worst case is often RADARS's)

  def step_bytes(space, subspace) -> tuple[int, float]:
    key = (space.op_names, tuple(subspace))
    if key not in compiled:
      compiled[key] = compile_bytes(space, subspace, config, image_shape, batch, mesh, mode)
    return compiled[key]

  per_device = batch // int(mesh.devices.size)
  start = time.perf_counter()
  largest = spaces.make_space("darts_large", num_ops=max(ns))
  model = cost_lib.trace_cost_model(largest, config.supernet, 10, image_shape, per_device)
  alive = np.ones((largest.num_choice_points, largest.max_ops), bool)
  for k in (1, 2):
    mask = model.worst_case(alive, k)
    model.add_point(mask, step_bytes(largest, largest.subspace_from_mask(mask))[0])
  log(f"cost model traced and calibrated in {time.perf_counter() - start:.0f} s")
  rows = []
  full_bytes = {}
  for n in sorted(ns):
    space = spaces.make_space("darts_large", num_ops=n)
    full_bytes[n], seconds = step_bytes(space, space.full_subspace())
    log(f"N={n}: full DARTS step {memory.format_gb(full_bytes[n])} ({seconds:.0f} s to compile)")
    rows.append({"num_ops": n, "darts_bytes": full_bytes[n], "darts_compile_seconds": seconds})
  if budget_gb is None:  # small: halfway between full DARTS at the smallest and largest N
    budget_gb = ((full_bytes[min(ns)] + full_bytes[max(ns)]) / 2 if small else 12e9) / 1e9
  budget = budget_gb * 1e9
  for row in rows:
    n = row["num_ops"]
    space = spaces.make_space("darts_large", num_ops=n)
    sub_model = cost_lib.CostModel(model.empty, model.per_op[:, :n], space, list(model.points),
                                   model.slope, model.intercept)
    alive_n = np.ones((space.num_choice_points, n), bool)
    # As the RADARS loop does: k from the estimate with a 5% margin, then the
    # worst case is compiled and k lowered while XLA's figure is over budget.
    k = sub_model.largest_k(alive_n, 0.95 * budget)
    row.update(budget_bytes=budget, radars_k_estimated=k, darts_fits=row["darts_bytes"] <= budget)
    while k >= 1:
      worst = sub_model.worst_case(alive_n, k)
      row["radars_estimate_bytes"] = sub_model.estimate(worst)
      # (k = n: the whole space, compiled above)
      row["radars_bytes"], _ = step_bytes(space, space.subspace_from_mask(worst))
      if row["radars_bytes"] <= budget:
        break
      k -= 1
    row["radars_k"] = k
    row["radars_fits"] = k >= 1 and row["radars_bytes"] <= budget
    log(f"N={n}: RADARS k={k}, worst-case subspace "
        f"{memory.format_gb(row.get('radars_bytes', float('nan')))}")
  return {"setting": "small" if small else "cifar", "mode": mode, "batch_size": batch,
          "channels": config.supernet.channels, "layers": config.supernet.layers,
          "image_shape": list(image_shape), "devices": int(mesh.devices.size),
          "platform": jax.devices()[0].platform, "budget_bytes": budget, "rows": rows,
          "seconds": time.perf_counter() - start,
          "cost_model": {"slope": model.slope, "intercept": model.intercept}}


def table(result: dict) -> str:
  lines = [f"budget {memory.format_gb(result['budget_bytes'])} per step per device "
           f"({result['setting']} setting, {result.get('mode', 'first_order')} step, "
           f"batch {result['batch_size']}, "
           f"{result['channels']} channels, {result['layers']} cell{'s' if result['layers'] != 1 else ''})",
           f"{'N ops':>5}  {'full DARTS':>12}  {'fits':>4}  {'RADARS k':>8}  "
           f"{'RADARS worst':>12}  {'estimate':>10}  {'fits':>4}"]
  for r in result["rows"]:
    lines.append(f"{r['num_ops']:>5}  {memory.format_gb(r['darts_bytes']):>12}  "
                 f"{'yes' if r['darts_fits'] else 'no':>4}  {r['radars_k']:>8}  "
                 f"{memory.format_gb(r.get('radars_bytes', 0)):>12}  "
                 f"{memory.format_gb(r.get('radars_estimate_bytes', 0)):>10}  "
                 f"{'yes' if r.get('radars_fits') else 'no':>4}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = result["rows"]
  n = [r["num_ops"] for r in rows]
  unit, scale = ("GB", 1e9) if result["budget_bytes"] >= 1e8 else ("MB", 1e6)
  fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
  ax.plot(n, [r["darts_bytes"] / scale for r in rows], "o-", lw=2, label="full-space DARTS")
  ax.plot(n, [r.get("radars_bytes", np.nan) / scale for r in rows], "s-", lw=2,
          label="RADARS worst-case subspace")
  for r in rows:
    if "radars_bytes" in r:
      ax.annotate(f"k={r['radars_k']}", (r["num_ops"], r["radars_bytes"] / scale),
                  textcoords="offset points", xytext=(0, -16), ha="center", fontsize=10)
  ax.axhline(result["budget_bytes"] / scale, color="crimson", ls="--", label="budget")
  ax.set_xlabel("ops per edge (N)")
  ax.set_ylabel(f"train-step memory per device ({unit})")
  ax.set_xticks(n)
  ax.set_title(f"Step memory against space size ({result['setting']} setting)")
  ax.grid(alpha=0.3)
  ax.legend(frameon=False)
  fig.savefig(path, dpi=130)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--small", action="store_true", help="tiny setting (minutes on a CPU)")
  parser.add_argument("--ns", default="8,12,16,20", help="ops per edge, comma separated")
  parser.add_argument("--budget_gb", type=float, default=None)
  parser.add_argument("--mode", default="single_level", choices=dnas_steps.MODES,
                      help="the train step both sides compile")
  parser.add_argument("--json", default=None, help="write the results here")
  parser.add_argument("--plot", default=None, help="PNG (default: next to --json)")
  parser.add_argument("--layers", type=int, default=None,
                      help="DARTS cells (default: 1 with --small, else 8)")
  args = parser.parse_args(argv)
  try:
    ns = [int(x) for x in args.ns.split(",")]
  except ValueError:
    print(f"memory_scaling: error: --ns={args.ns!r} is not a comma-separated list of ints",
          file=sys.stderr)
    return 2
  if not all(1 <= n <= len(spaces.DARTS_LARGE_OPS) for n in ns):
    print(f"memory_scaling: error: every N must be in 1..{len(spaces.DARTS_LARGE_OPS)}",
          file=sys.stderr)
    return 2
  if args.layers is not None and args.layers < 1:
    print(f"memory_scaling: error: --layers={args.layers} must be at least 1", file=sys.stderr)
    return 2
  result = run(ns, args.small, args.budget_gb, log=lambda m: print(m, flush=True),
               layers=args.layers, mode=args.mode)
  print(table(result))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  png = args.plot or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
  if png:
    plot(result, png)
    print(f"plot: {png}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
