"""The figures to take when a GPU or TPU is at hand, in one call.

    python experiments/accelerator_check.py --json $OUT/accelerator_check.json   # GPU / TPU
    python experiments/accelerator_check.py --small --json /tmp/check.json       # CPU, small

Five parts, each in its own process with its own time limit (`--limits`),
so a part that fails or runs over leaves the others' figures; the JSON is
rewritten after every part:
  device      the devices, their memory limit and the budget a search
              left without `memory_budget_gb` gets from it
              (`radars_jax.memory.fill_budget_from_device`);
  throughput  `experiments/throughput.py`: the supernet step against the
              PyTorch peer on the same device (the peer on CUDA where JAX
              runs on a GPU; skipped, and said, without torch), at the
              defaults (bfloat16 activations on a GPU or TPU);
  precision   the same single-level step of ours in float32 and in
              bfloat16 (`supernet.compute_dtype`): what `auto` picks
              should be the faster (`radars_jax.precision`);
  memory      for several subspaces of the `darts` space at the CIFAR
              search setting (batch 64, 16 channels, 8 cells, 32x32): the
              cost model's estimate (traced, calibrated on the worst cases
              of 1 and 2 ops per edge as the RADARS loop does), XLA's
              compiled bytes (what the budget is checked against) and the
              device's measured peak (`memory_stats()["peak_bytes_in_use"]`)
              of a process that runs only that step;
  cifar       `configs/cifar.py` (RADARS on `darts_large`, 12 GB) for one
              iteration of 2 samples on synthetic 32x32 images: the time to
              the first train step, the search's time, its worst step.
`--small` runs each part at a setting a CPU finishes in about a minute
(the memory part on three subspaces: the worst case of 1 op, the random
one and the whole space); there a device reports no memory, so the
measured peaks are None.

On the lent GPU machine (`device` tool; /work/.library/device/README.md),
whose image has JAX, Flax, optax, orbax, chex and PyTorch but not
ml_collections or tensorboardX, and where ../shared does not travel: here,
    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 -d .whl ml_collections tensorboardX
    mkdir -p .peer && cp ../shared/peers/darts_torch.py .peer/
(both folders in .git/info/exclude), then one `run` carrying `.whl` and
`.peer`:
    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 experiments/accelerator_check.py \
        --peer .peer/darts_torch.py --json $OUT/accelerator_check.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("device", "throughput", "precision", "memory", "cifar")
# seconds each part may take on a GPU: together 8 minutes
DEFAULT_LIMITS = {"device": 45, "throughput": 140, "precision": 75, "memory": 110, "cifar": 110}
MEMORY_SPACE = "darts"


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--small", action="store_true", help="a setting a CPU runs in a minute")
  ap.add_argument("--parts", default=",".join(PARTS), help="which parts, comma-separated")
  ap.add_argument("--limits", default=None,
                  help="seconds per part, e.g. throughput=200,cifar=100")
  ap.add_argument("--json", default=None, help="write the results here")
  ap.add_argument("--peer", default=None,
                  help="darts_torch.py for the throughput part (throughput.py's default)")
  ap.add_argument("--part", default=None, help=argparse.SUPPRESS)         # (a child process)
  ap.add_argument("--subspace", default=None, help=argparse.SUPPRESS)     # (a memory child)
  args = ap.parse_args(argv)
  args.parts = [p for p in args.parts.split(",") if p]
  unknown = set(args.parts) - set(PARTS)
  if unknown:
    ap.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
  limits = dict(DEFAULT_LIMITS)
  for item in args.limits.split(",") if args.limits else []:
    name, _, seconds = item.partition("=")
    limits[name] = float(seconds)
  args.limits = limits
  return args


def child_env() -> dict:
  env = dict(os.environ)
  # every part's memory as it uses it (JAX's default holds most of a GPU
  # ahead, which would hide the peak and starve the PyTorch peer)
  env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  return env


def run_child(args: list[str], limit: float) -> dict:
  """`python args` with `limit` seconds; its last stdout line is its JSON."""
  start = time.perf_counter()
  try:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=child_env(), cwd=ROOT, timeout=limit)
  except subprocess.TimeoutExpired as e:
    tail = (e.stderr or b"")[-1500:]
    return {"ok": False, "error": f"over its {limit:.0f} s limit",
            "stderr_tail": tail.decode() if isinstance(tail, bytes) else tail,
            "seconds": time.perf_counter() - start}
  lines = done.stdout.strip().splitlines()
  if done.returncode != 0 or not lines:
    return {"ok": False, "error": f"exit {done.returncode}", "stderr_tail": done.stderr[-1500:],
            "seconds": time.perf_counter() - start}
  return {"ok": True, "result": json.loads(lines[-1]), "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------
# The parts (each runs in a child process: `--part NAME`)
# ---------------------------------------------------------------------------

def device_part(small: bool) -> dict:
  del small
  import jax  # pylint: disable=import-outside-toplevel
  from radars_jax import memory  # pylint: disable=import-outside-toplevel
  devices = jax.local_devices()
  limit = memory.device_memory_limit(devices)
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch_cuda = bool(torch.cuda.is_available())
  except ImportError:
    torch_cuda = None
  return {"backend": jax.default_backend(), "jax": jax.__version__,
          "devices": [d.device_kind for d in devices], "process_count": jax.process_count(),
          "bytes_limit": limit, "budget_gb_from_device": memory.budget_from_device(limit),
          "torch_cuda": torch_cuda}


def run_throughput(flags: list[str], limit: float) -> dict:
  """experiments/throughput.py's JSON for `flags`."""
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "throughput.json"
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "throughput.py"),
                           *flags, "--json", str(out)], capture_output=True, text=True,
                          env=child_env(), cwd=ROOT, timeout=limit)
    if not out.exists():
      raise RuntimeError(f"throughput.py exit {done.returncode}: {done.stderr[-1500:]}")
    return json.loads(out.read_text())


def throughput_flags(small: bool) -> list[str]:
  return (["--small", "--steps", "2", "--warmup", "1"] if small
          else ["--steps", "5", "--warmup", "2"])


def throughput_part(small: bool, limit: float, peer: str | None) -> dict:
  flags = throughput_flags(small) + (["--modes", "single_level"] if small else [])
  if peer:
    flags += ["--peer", str(Path(peer).resolve())]
  result = run_throughput(flags, limit)
  return {"peer_skipped": result["peer_skipped"], "setting": result["setting"],
          "rows": [{"mode": r["mode"], "compile_s": r["ours"]["compile_s"],
                    "ours_images_per_s": r["ours"]["images_per_s"],
                    "peer_images_per_s": [p["images_per_s"] for p in r["peer_runs"]],
                    "ratio": r["ratio"], "step_bytes": r["ours"]["step_bytes"]}
                   for r in result["rows"]]}


def precision_part(small: bool, limit: float) -> dict:
  """Our single-level step in each compute dtype (no peer)."""
  start, rows = time.perf_counter(), []
  for dtype in ("float32", "bfloat16"):
    left = limit - (time.perf_counter() - start) - 5
    flags = [*throughput_flags(small), "--modes", "single_level", "--no-peer",
             "--compute-dtype", dtype]
    ours = run_throughput(flags, left)["rows"][0]["ours"]
    rows.append({"compute_dtype": dtype, "compile_s": ours["compile_s"],
                 "images_per_s": ours["images_per_s"], "step_bytes": ours["step_bytes"]})
  return {"rows": rows}


def memory_setting(small: bool):
  import memory_scaling  # pylint: disable=import-outside-toplevel
  from radars_jax.nas import spaces  # pylint: disable=import-outside-toplevel
  config, image_shape, batch = memory_scaling.settings(small)
  return config, image_shape, batch, spaces.make_space(MEMORY_SPACE)


def memory_part(small: bool, limit: float) -> dict:
  """The cost model and XLA's bytes here; each subspace's peak in a child."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from radars_jax import parallel  # pylint: disable=import-outside-toplevel
  from radars_jax.radars import cost_model as cost_lib  # pylint: disable=import-outside-toplevel
  import memory_scaling  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  config, image_shape, batch, space = memory_setting(small)
  mesh = parallel.make_mesh()
  model = cost_lib.trace_cost_model(space, config.supernet, 10, image_shape, batch)
  alive = np.ones((space.num_choice_points, space.max_ops), bool)
  for k in (1, 2):   # calibrated as the RADARS loop calibrates
    mask = model.worst_case(alive, k)
    model.add_point(mask, memory_scaling.compile_bytes(
        space, space.subspace_from_mask(mask), config, image_shape, batch, mesh)[0])
  rng = np.random.default_rng(0)
  random_two = np.zeros_like(alive)
  for c in range(space.num_choice_points):
    random_two[c, rng.choice(space.max_ops, 2, replace=False)] = True
  masks = {"worst case, 1 op": model.worst_case(alive, 1),
           "worst case, 2 ops": model.worst_case(alive, 2),
           "worst case, 3 ops": model.worst_case(alive, 3),
           "random, 2 ops": random_two, "whole space": alive}
  if small:   # (each row is a process of its own and a compile)
    masks = {name: masks[name] for name in ("worst case, 1 op", "random, 2 ops", "whole space")}
  rows = []
  for name, mask in masks.items():
    subspace = space.subspace_from_mask(mask)
    left = limit - (time.perf_counter() - start) - 5
    measured = (run_child([str(Path(__file__)), "--part", "memory_one", *(["--small"] * small),
                           "--subspace", json.dumps([list(a) for a in subspace])], left)
                if left > 10 else {"ok": False, "error": "no time left"})
    row = {"subspace": name, "estimate_bytes": float(model.estimate(mask)), **measured}
    result = measured.get("result") or {}
    if result:
      row["estimate_vs_compiled"] = row["estimate_bytes"] / result["compiled_bytes"] - 1.0
    peak = result.get("peak_bytes")
    if peak:
      row["estimate_error"] = row["estimate_bytes"] / peak - 1.0
      row["compiled_error"] = result["compiled_bytes"] / peak - 1.0
    rows.append(row)
  return {"space": MEMORY_SPACE, "batch": batch, "image_shape": list(image_shape),
          "channels": config.supernet.channels, "layers": config.supernet.layers,
          "cost_model": {"slope": model.slope, "intercept": model.intercept}, "rows": rows}


def memory_one(small: bool, subspace_json: str) -> dict:
  """One subspace's single-level train step: compiled, run three times;
  XLA's bytes against the device's peak."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from radars_jax import parallel  # pylint: disable=import-outside-toplevel
  from radars_jax.dnas import search  # pylint: disable=import-outside-toplevel
  from radars_jax.dnas import steps as dnas_steps  # pylint: disable=import-outside-toplevel
  from radars_jax.nas import supernet  # pylint: disable=import-outside-toplevel
  config, image_shape, batch, space = memory_setting(small)
  subspace = tuple(tuple(int(o) for o in ops) for ops in json.loads(subspace_json))
  mesh = parallel.make_mesh()
  model = supernet.build_supernet(space, subspace, config.supernet, 10)
  program = dnas_steps.DnasProgram(model, "single_level", config.dnas, 1, mesh, (0.0,), (1.0,),
                                   compute_dtype=config.supernet.compute_dtype)
  compiled, _ = search.compile_subspace_step(program, subspace, image_shape, batch)
  key = jax.random.key(0)
  alphas = supernet.init_alphas(jax.random.fold_in(key, 1), subspace)
  state = program.init_state(supernet.init_params(model, image_shape, alphas, key), alphas)
  sharding = parallel.batch_sharded(mesh)
  data = jax.device_put({"image": jnp.ones((batch, *image_shape), jnp.float32),
                         "label": jnp.zeros((batch,), jnp.int32)},
                        {"image": sharding, "label": sharding})
  before = jax.local_devices()[0].memory_stats() or {}
  seconds = []
  for _ in range(3):
    t0 = time.perf_counter()
    state, metrics = compiled.fn(state, data, None)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - t0)
  after = jax.local_devices()[0].memory_stats() or {}
  return {"compiled_bytes": compiled.bytes, "compile_s": compiled.seconds,
          "in_use_before_bytes": before.get("bytes_in_use"),
          "peak_bytes": after.get("peak_bytes_in_use"), "step_s": min(seconds),
          "loss": float(metrics["loss"])}


def cifar_part(small: bool, limit: float) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    if small:
      flags = [f"--config={ROOT / 'configs' / 'digits.py'}", "--config.radars.max_iterations=1"]
    else:
      flags = [f"--config={ROOT / 'configs' / 'cifar.py'}", "--config.data.name=synthetic",
               "--config.data.image_size=32", "--config.data.holdout_size=256",
               "--config.data.train_size=4096", "--config.radars.max_iterations=1",
               "--config.radars.subspace_epochs=0.3",
               "--config.controller.samples_per_iteration=2", "--config.dnas.epochs=1"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "radars_jax.main", *flags,
                           f"--workdir={workdir}", "--config.progress_bar=False"],
                          capture_output=True, text=True, env=child_env(), cwd=ROOT,
                          timeout=limit)
    wall = time.perf_counter() - start
    summary_path = Path(workdir) / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
      raise RuntimeError(f"main exit {done.returncode}: {done.stderr[-1500:]}")
    s = json.loads(summary_path.read_text())
  return {"config": "digits.py" if small else "cifar.py", "wall_s": wall,
          **{k: s.get(k) for k in ("first_train_step_seconds", "search_seconds",
                                   "compile_seconds", "compile_loop_seconds", "step_bytes",
                                   "memory_budget_bytes", "over_budget_steps",
                                   "median_estimate_error", "max_estimate_error",
                                   "static_program_runs", "shared_program_runs")}}


def run_part(name: str, args) -> dict:
  if name == "device":
    return device_part(args.small)
  if name == "memory_one":
    return memory_one(args.small, args.subspace)
  if name == "throughput":
    return throughput_part(args.small, args.limits[name], args.peer)
  return {"memory": memory_part, "cifar": cifar_part,
          "precision": precision_part}[name](args.small, args.limits[name])


# ---------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------

def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.part:   # a child: one part, its JSON on the last line
    print(json.dumps(run_part(args.part, args)))
    return {}
  results = {"small": args.small, "limits_s": args.limits, "parts": {}}
  for name in args.parts:
    print(f"accelerator_check: {name} (at most {args.limits[name]:.0f} s) ...", flush=True)
    outcome = run_child([str(Path(__file__)), "--part", name, *(["--small"] * args.small),
                         "--limits", ",".join(f"{k}={v}" for k, v in args.limits.items()),
                         *(["--peer", args.peer] if args.peer else [])],
                        args.limits[name] + 15)
    results["parts"][name] = outcome
    print(json.dumps(outcome, indent=1)[:3000], flush=True)
    if args.json:
      Path(args.json).parent.mkdir(parents=True, exist_ok=True)
      Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
  failed = [n for n, r in results["parts"].items() if not r["ok"]]
  print(f"accelerator_check: {len(results['parts']) - len(failed)} of "
        f"{len(results['parts'])} parts ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
  return results


if __name__ == "__main__":
  main()
