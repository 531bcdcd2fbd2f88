"""Images per second of the supernet train step, ours against the PyTorch peer.

    python experiments/throughput.py                        # batch 32, 16 ch, 8 cells, 32x32
    python experiments/throughput.py --batch 64 --json experiments/results/throughput.json
    python experiments/throughput.py --small                # a quick run (8 ch, 3 cells, 16x16)
    python experiments/throughput.py --scan-edges 0         # one mixed op per edge, not auto's scan

Ours: the full `darts` space (8 ops on each of the 28 choice points), the
library's own train step (`radars_jax.dnas.steps.DnasProgram`), compiled ahead of
time on abstract inputs (compile seconds are reported on their own), then
run on random data: warm-up steps, then blocks of `--steps` timed steps,
one before and one after each of the peer's `--rounds` runs; ours is the
median over all of them.
Two modes: `single_level` (Single-DARTS: one forward and backward for
weights and alphas) and `first_order` (DARTS V1: an alpha step, then a
weight step).

The peer (`/work/shared/peers/darts_torch.py`, or `--peer PATH`) runs in a
subprocess in the same invocation, with the same batch, channels, cells and
image size, on CUDA where JAX runs on a GPU (`--peer-device`); its
`weights` mode (one forward and backward, SGD step) faces our
`single_level`, its `first_order` mode our `first_order`. Without torch
(or the peer file) the peer is skipped and said so. The ratio is
ours / peer images per second (> 1: ours is faster).

On a shared machine timings are noisy (docs/performance.md): both sides
are measured in the same run, ours on
both sides of every peer run; each round's ratio takes our blocks around
that peer run, and the reported ratio is the median over the rounds.
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

# On a GPU the peer shares the device with this process: JAX must not hold
# most of its memory ahead (its default), or the peer could run out of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import ml_collections
import numpy as np

from radars_jax import config_defaults
from radars_jax.dnas import steps as dnas_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax.dnas import search as search_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib

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
  ap.add_argument("--rounds", type=int, default=1,
                  help="peer runs, each between two blocks of --steps of ours")
  ap.add_argument("--modes", default="single_level,first_order",
                  help="comma-separated: single_level, first_order")
  ap.add_argument("--depthwise-impl", default=None,
                  help="xla | shifted | auto (default: auto, radars_jax.performance)")
  ap.add_argument("--scan-edges", type=int, choices=(0, 1), default=None,
                  help="run each cell's edges in a lax.scan, each mixed op recomputed "
                  "in the backward pass (default: auto, on)")
  ap.add_argument("--compute-dtype", default=None, choices=("float32", "bfloat16", "auto"),
                  help="float32 | bfloat16 | auto (default: auto, radars_jax.precision)")
  ap.add_argument("--passes-in-loop", type=int, choices=(0, 1), default=0,
                  help="first order: both passes as one lax.scan (dnas.passes_in_loop)")
  ap.add_argument("--space", default="darts")
  ap.add_argument("--num-ops", type=int, default=None)
  ap.add_argument("--peer", default=str(DEFAULT_PEER), help="path of darts_torch.py")
  ap.add_argument("--peer-device", default="auto",
                  help="the peer's torch device; auto: cuda where JAX runs on a GPU, else cpu")
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
  if args.rounds < 1 or args.steps < 1:
    ap.error("--rounds and --steps must be at least 1")
  args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  for m in args.modes:
    if m not in PEER_MODE:
      ap.error(f"unknown mode {m!r}; choose from {', '.join(PEER_MODE)}")
  return args


def supernet_config(args, mode: str) -> ml_collections.ConfigDict:
  """The supernet block a search of `mode` runs with: the flags given,
  the others as `auto` picks them for this platform
  (`radars_jax.performance`)."""
  config = config_defaults.base_config()
  config.method = "single_darts" if mode == "single_level" else "darts"
  config.space.name, config.space.num_ops = args.space, args.num_ops
  cfg = config.supernet
  cfg.channels, cfg.layers = args.channels, args.layers
  if args.depthwise_impl:
    cfg.depthwise_impl = args.depthwise_impl
  if args.scan_edges is not None:
    cfg.scan_edges = bool(args.scan_edges)
  if args.compute_dtype:
    cfg.compute_dtype = args.compute_dtype
  return performance.resolve(config)[0].supernet


class OurStep:
  """The library's train step for `mode`, compiled on abstract inputs (the
  compile is timed on its own), with weights and a batch to time it on."""

  def __init__(self, args, mode: str):
    space = spaces_lib.make_space(args.space, num_ops=args.num_ops)
    subspace = space.full_subspace()
    cfg = supernet_config(args, mode)
    model = supernet_lib.build_supernet(space, subspace, cfg, args.classes)
    image_shape = (args.image, args.image, 3)
    mesh = parallel.make_mesh()
    parallel.check_divisible(args.batch, mesh, "--batch")
    dnas_config = config_defaults.base_config().dnas
    dnas_config.max_program_ops = None   # times whole spaces, however large their programs
    dnas_config.passes_in_loop = bool(args.passes_in_loop) and mode == "first_order"
    program = dnas_lib.DnasProgram(model, mode, dnas_config, 1000, mesh, (0.0,), (1.0,),
                                   compute_dtype=cfg.compute_dtype)
    self.compiled, _ = search_lib.compile_subspace_step(program, subspace, image_shape,
                                                        args.batch)
    key = jax.random.key(0)
    alphas = supernet_lib.init_alphas(jax.random.fold_in(key, 1), subspace)
    self.weights = supernet_lib.init_params(model, image_shape, alphas,
                                            jax.random.fold_in(key, 0))
    self.state = program.init_state(self.weights, alphas)
    sharding = parallel.batch_sharded(mesh)

    def batch(seed):
      k1, k2 = jax.random.split(jax.random.key(seed))
      return jax.device_put(
          {"image": jax.random.normal(k1, (args.batch, *image_shape), jnp.float32),
           "label": jax.random.randint(k2, (args.batch,), 0, args.classes, jnp.int32)},
          {"image": sharding, "label": sharding})

    self.batches = batch(1), (batch(2) if program.bilevel else None)
    self.mode, self.cfg, self.batch_size, self.metrics = mode, cfg, args.batch, None
    self.passes_in_loop = bool(dnas_config.passes_in_loop)

  def run(self, steps: int) -> list[float]:
    """Runs `steps` steps; the seconds of each (until its outputs are ready)."""
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      self.state, self.metrics = self.compiled.fn(self.state, *self.batches)
      jax.block_until_ready((self.state, self.metrics))
      times.append(time.perf_counter() - start)
    return times

  def result(self, times: list[float], **extra) -> dict:
    loss = float(self.metrics["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(f"{self.mode}: loss is {loss}")
    med = statistics.median(times)
    return {"mode": self.mode, "compile_s": self.compiled.seconds,
            "step_bytes": self.compiled.bytes, "step_s_median": med, "step_s_all": times,
            "images_per_s": self.batch_size / med,
            "weights": supernet_lib.count_params(self.weights), "loss": loss,
            "depthwise_impl": self.cfg.depthwise_impl,
            "compute_dtype": self.cfg.compute_dtype,
            "scan_edges": bool(self.cfg.scan_edges),
            "passes_in_loop": self.passes_in_loop, **extra}


def torch_available() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def peer_device(requested: str, backend: str) -> str:
  """The peer's torch device: `requested`, or for "auto" the one matching
  JAX's backend (cuda on a GPU, else cpu: PyTorch has no TPU build here)."""
  if requested != "auto":
    return requested
  return "cuda" if backend == "gpu" else "cpu"


def time_peer(args, mode: str) -> dict:
  """The PyTorch peer in a subprocess; its `--json` prints one line."""
  cmd = [sys.executable, args.peer, "--batch", str(args.batch), "--channels",
         str(args.channels), "--layers", str(args.layers), "--image", str(args.image),
         "--mode", PEER_MODE[mode], "--steps", str(args.steps), "--device",
         peer_device(args.peer_device, jax.default_backend()), "--json"]
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


def interleave(run_ours, steps: int, rounds: int = 1, run_peer=None):
  """(blocks of our step seconds, the peer's results): with a peer, `rounds`
  peer runs, each between two blocks of `steps` of ours (ours, peer, ours,
  peer, ..., ours), so a machine whose speed drifts during the run (shared
  cores) moves both sides of each round's ratio; without one, one block."""
  blocks, peers = [run_ours(steps)], []
  for _ in range(rounds if run_peer is not None else 0):
    peers.append(run_peer())
    blocks.append(run_ours(steps))
  return blocks, peers


def round_ratios(blocks, peers, batch: int) -> list[float]:
  """Per peer run: ours (the median step of the blocks on either side of
  it) in images/s over the peer's images/s."""
  return [batch / statistics.median(blocks[r] + blocks[r + 1]) / peer["images_per_s"]
          for r, peer in enumerate(peers)]


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
    step = OurStep(args, mode)
    step.run(args.warmup)
    with_peer = not skip and args.space == "darts" and args.num_ops is None
    blocks, peers = interleave(step.run, args.steps, args.rounds,
                               (lambda: time_peer(args, mode)) if with_peer else None)
    ours = step.result([t for block in blocks for t in block],
                       step_s_median_per_block=[statistics.median(b) for b in blocks])
    blocks_note = (", blocks " + " / ".join(f"{m:.3f}" for m in ours["step_s_median_per_block"])
                   + " s" if peers else "")
    print(f"ours  {mode:13s} compile {ours['compile_s']:6.1f} s   step "
          f"{ours['step_s_median']:7.3f} s   {ours['images_per_s']:7.2f} images/s   "
          f"({ours['depthwise_impl']} depthwise, {ours['compute_dtype']}, "
          f"{ours['weights']:,} weights{blocks_note})",
          flush=True)
    row = {"mode": mode, "ours": ours, "peer_runs": peers, "ratio": None}
    if not skip and not with_peer:
      row["peer_skipped"] = "the peer has only the full darts space"
    if peers:
      row["ratio_per_round"] = round_ratios(blocks, peers, args.batch)
      row["ratio"] = statistics.median(row["ratio_per_round"])
      for peer in peers:
        print(f"peer  {PEER_MODE[mode]:13s}                  step {peer['step_s_median']:7.3f} s"
              f"   {peer['images_per_s']:7.2f} images/s   ({peer['threads']} threads, "
              f"{peer['weights']:,} weights)", flush=True)
      print(f"ratio ours/peer {row['ratio']:.2f} (median of the rounds: "
            + ", ".join(f"{x:.2f}" for x in row["ratio_per_round"]) + ")", flush=True)
    del step   # frees the compiled program and its state before the next mode
    rows.append(row)
    write_json(args.json, setting, skip, rows)  # after every mode: long runs lose nothing

  print()
  print(f"{'mode':14s} {'ours img/s':>10s} {'peer img/s':>10s} {'ratio':>6s} {'compile s':>9s}")
  for r in rows:
    peer = (f"{statistics.median(p['images_per_s'] for p in r['peer_runs']):10.2f}"
            if r["peer_runs"] else f"{'skipped':>10s}")   # the median over the rounds
    ratio = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'-':>6s}"
    print(f"{r['mode']:14s} {r['ours']['images_per_s']:10.2f} {peer} {ratio} "
          f"{r['ours']['compile_s']:9.1f}")
  result = write_json(args.json, setting, skip, rows)
  if args.json:
    print(f"wrote {args.json}")
  return result


if __name__ == "__main__":
  main()
