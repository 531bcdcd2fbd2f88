"""Images per second of the supernet train step, ours against the PyTorch peer.

    python experiments/throughput.py                        # batch 32, 16 ch, 8 cells, 32x32
    python experiments/throughput.py --batch 64 --json experiments/results/throughput.json
    python experiments/throughput.py --small                # a quick run (8 ch, 3 cells, 16x16)

Ours: the full `darts` space (8 ops on each of the 28 choice points), the
library's own train step (`radars_jax.dnas.DnasProgram`), compiled ahead of
time on abstract inputs (compile seconds are reported on their own), then
run on random data: warm-up steps, then the median of `--steps` timed steps.
Two modes: `single_level` (Single-DARTS: one forward and backward for
weights and alphas) and `first_order` (DARTS V1: an alpha step, then a
weight step).

The peer (`/work/shared/peers/darts_torch.py`, or `--peer PATH`) runs in a
subprocess in the same invocation, with the same batch, channels, cells and
image size; its `weights` mode (one forward and backward, SGD step) faces
our `single_level`, its `first_order` mode our `first_order`. Without torch
(or the peer file) the peer is skipped and said so. The ratio is
ours / peer images per second (> 1: ours is faster).

On a shared machine timings are noisy: both sides are measured in the same
run, one after the other, so their ratio is the fair number.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from radars_jax import config_defaults
from radars_jax import dnas as dnas_lib
from radars_jax import parallel
from radars_jax import search as search_lib
from radars_jax import spaces as spaces_lib
from radars_jax import supernet as supernet_lib

DEFAULT_PEER = Path("/work/shared/peers/darts_torch.py")
PEER_MODE = {"single_level": "weights", "first_order": "first_order"}
SMALL = dict(batch=8, channels=8, layers=3, image=16, steps=5, warmup=2)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--channels", type=int, default=16)
  ap.add_argument("--layers", type=int, default=8, help="cells")
  ap.add_argument("--image", type=int, default=32, help="image height = width")
  ap.add_argument("--classes", type=int, default=10)
  ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  ap.add_argument("--modes", default="single_level,first_order",
                  help="comma-separated: single_level, first_order")
  ap.add_argument("--depthwise-impl", default=None,
                  help="xla | shifted | scan | auto (default: the config default)")
  ap.add_argument("--stack-edges", type=int, choices=(0, 1), default=None,
                  help="compute each op once over all edges that use it (default: config)")
  ap.add_argument("--space", default="darts")
  ap.add_argument("--num-ops", type=int, default=None)
  ap.add_argument("--peer", default=str(DEFAULT_PEER), help="path of darts_torch.py")
  ap.add_argument("--no-peer", action="store_true", help="do not run the PyTorch peer")
  ap.add_argument("--peer-timeout", type=float, default=1800.0)
  ap.add_argument("--small", action="store_true",
                  help=f"a quick setting: {SMALL} (explicit flags still win)")
  ap.add_argument("--json", default=None, help="write the results here")
  args = ap.parse_args(argv)
  if args.small:
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:])
             if a.startswith("--")}
    for key, value in SMALL.items():
      if key not in given:
        setattr(args, key, value)
  args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  for m in args.modes:
    if m not in PEER_MODE:
      ap.error(f"unknown mode {m!r}; choose from {', '.join(PEER_MODE)}")
  return args


def supernet_config(args) -> ml_collections.ConfigDict:
  cfg = config_defaults.base_config().supernet
  cfg.channels, cfg.layers = args.channels, args.layers
  if args.depthwise_impl:
    cfg.depthwise_impl = args.depthwise_impl
  if args.stack_edges is not None:
    cfg.stack_edges = bool(args.stack_edges)
  return cfg


def time_ours(args, mode: str) -> dict:
  """Compile (abstract inputs) and time the library's train step."""
  space = spaces_lib.make_space(args.space, num_ops=args.num_ops)
  subspace = space.full_subspace()
  cfg = supernet_config(args)
  model = supernet_lib.build_supernet(space, subspace, cfg, args.classes)
  image_shape = (args.image, args.image, 3)
  mesh = parallel.make_mesh()
  parallel.check_divisible(args.batch, mesh, "--batch")
  program = dnas_lib.DnasProgram(model, mode, config_defaults.base_config().dnas,
                                 1000, mesh, (0.0,), (1.0,))
  compiled, _ = search_lib.compile_subspace_step(program, subspace, image_shape, args.batch)

  key = jax.random.key(0)
  alphas = supernet_lib.init_alphas(jax.random.fold_in(key, 1), subspace)
  weights = supernet_lib.init_params(model, image_shape, alphas, jax.random.fold_in(key, 0))
  state = program.init_state(weights, alphas)
  sharding = parallel.batch_sharded(mesh)

  def batch(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.device_put(
        {"image": jax.random.normal(k1, (args.batch, *image_shape), jnp.float32),
         "label": jax.random.randint(k2, (args.batch,), 0, args.classes, jnp.int32)},
        {"image": sharding, "label": sharding})

  batch_w, batch_a = batch(1), (batch(2) if program.bilevel else None)
  for _ in range(args.warmup):
    state, metrics = compiled.fn(state, batch_w, batch_a)
  jax.block_until_ready((state, metrics) if args.warmup else state)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled.fn(state, batch_w, batch_a)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise FloatingPointError(f"{mode}: loss is {loss}")
  med = statistics.median(times)
  return {"mode": mode, "compile_s": compiled.seconds, "step_bytes": compiled.bytes,
          "step_s_median": med, "step_s_all": times, "images_per_s": args.batch / med,
          "weights": supernet_lib.count_params(weights), "loss": loss,
          "depthwise_impl": cfg.depthwise_impl, "stack_edges": bool(cfg.stack_edges)}


def torch_available() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def time_peer(args, mode: str) -> dict:
  """The PyTorch peer in a subprocess; its `--json` prints one line."""
  cmd = [sys.executable, args.peer, "--batch", str(args.batch), "--channels",
         str(args.channels), "--layers", str(args.layers), "--image", str(args.image),
         "--mode", PEER_MODE[mode], "--steps", str(args.steps), "--device", "cpu", "--json"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.peer_timeout,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"peer failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
  line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
  out = json.loads(line)
  out["wall_s"] = time.perf_counter() - start
  out["command"] = " ".join(cmd)
  return out


def peer_skip_reason(args) -> str | None:
  if args.no_peer:
    return "--no-peer"
  if not Path(args.peer).is_file():
    return f"peer script {args.peer} not found"
  if not torch_available():
    return "torch is not installed"
  return None


def write_json(path, setting, skip, rows) -> dict:
  result = {"setting": setting, "peer_skipped": skip, "rows": rows,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "jax": jax.__version__, "backend": jax.devices()[0].platform,
                        "devices": jax.device_count()}}
  if path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
  return result


def main(argv=None) -> dict:
  args = parse_args(argv)
  skip = peer_skip_reason(args)
  setting = {"space": args.space, "num_ops": args.num_ops, "batch": args.batch,
             "channels": args.channels, "layers": args.layers, "image": args.image,
             "steps": args.steps, "warmup": args.warmup}
  print(f"setting: {setting}")
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}")
  if skip:
    print(f"peer: skipped ({skip})")
  rows = []
  for mode in args.modes:
    ours = time_ours(args, mode)
    print(f"ours  {mode:13s} compile {ours['compile_s']:6.1f} s   step "
          f"{ours['step_s_median']:7.3f} s   {ours['images_per_s']:7.2f} images/s   "
          f"({ours['depthwise_impl']} depthwise, {ours['weights']:,} weights)", flush=True)
    row = {"mode": mode, "ours": ours, "peer": None, "ratio": None}
    if not skip:
      if args.space != "darts" or args.num_ops is not None:
        row["peer_skipped"] = "the peer has only the full darts space"
      else:
        peer = time_peer(args, mode)
        row["peer"] = peer
        row["ratio"] = ours["images_per_s"] / peer["images_per_s"]
        print(f"peer  {PEER_MODE[mode]:13s}                  step {peer['step_s_median']:7.3f} s"
              f"   {peer['images_per_s']:7.2f} images/s   ({peer['threads']} threads, "
              f"{peer['weights']:,} weights)", flush=True)
        print(f"ratio ours/peer {row['ratio']:.2f}", flush=True)
    rows.append(row)
    write_json(args.json, setting, skip, rows)  # after every mode: long runs lose nothing

  print()
  print(f"{'mode':14s} {'ours img/s':>10s} {'peer img/s':>10s} {'ratio':>6s} {'compile s':>9s}")
  for r in rows:
    peer = f"{r['peer']['images_per_s']:10.2f}" if r["peer"] else f"{'skipped':>10s}"
    ratio = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'-':>6s}"
    print(f"{r['mode']:14s} {r['ours']['images_per_s']:10.2f} {peer} {ratio} "
          f"{r['ours']['compile_s']:9.1f}")
  result = write_json(args.json, setting, skip, rows)
  if args.json:
    print(f"wrote {args.json}")
  return result


if __name__ == "__main__":
  main()
