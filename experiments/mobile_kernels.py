"""Depthwise kernels in the mobile space's supernet step, on this machine.

    python experiments/mobile_kernels.py --json experiments/results/mobile_kernels_cpu.json

The step `configs/digits_mobile.py` searches with (8x8x1 images, batch 64,
widths x0.25, blocks 2,2,2,2,2,1): forward and backward of the static
supernet of the first 2 ops per block, and of the switched supernet (the
RADARS loop's shared program) with those ops in its 2 slots, once per
`supernet.depthwise_impl`. Compile seconds and the median of `--steps`
timed steps; what `radars_jax.performance` picks for the subspace
searches on this space follows from these figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from radars_jax import config_defaults
from radars_jax.nas import spaces
from radars_jax.nas import supernet


def time_step(impl: str, switched: bool, k: int, blocks: str, width_mult: float,
              batch: int, steps: int) -> dict:
  space = spaces.make_space("mobile", blocks=blocks)
  cfg = config_defaults.supernet_config()
  cfg.width_mult, cfg.depthwise_impl = width_mult, impl
  subspace = tuple(active[:k] for active in space.full_subspace())
  image = (8, 8, 1)
  if switched:
    model = supernet.build_supernet(space, None, cfg, 10, switched=True)
    slots = supernet.subspace_slots(subspace, k)
    params = supernet.init_params(model, image, None, jax.random.key(1),
                                  shapes=supernet.param_shapes(model, image, None, slots))
    alphas = tuple(jnp.zeros((k,)) for _ in subspace)
    apply = lambda p, x, a: model.apply({"params": p}, x, a, slots=jnp.asarray(slots))  # noqa: E731
  else:
    model = supernet.build_supernet(space, subspace, cfg, 10)
    alphas = supernet.init_alphas(jax.random.key(0), subspace)
    params = supernet.init_params(model, image, alphas, jax.random.key(1))
    apply = lambda p, x, a: model.apply({"params": p}, x, a)  # noqa: E731
  x = jax.random.normal(jax.random.key(2), (batch, *image))
  y = jnp.zeros((batch,), jnp.int32)
  grad = jax.jit(jax.grad(
      lambda p, a: optax.softmax_cross_entropy_with_integer_labels(apply(p, x, a), y).mean(),
      argnums=(0, 1)))
  start = time.perf_counter()
  jax.block_until_ready(grad(params, alphas))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(grad(params, alphas))
    times.append(time.perf_counter() - start)
  return {"depthwise_impl": impl, "program": "switched" if switched else "static",
          "compile_s": compile_s, "step_s_median": float(np.median(times))}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--k", type=int, default=2)
  ap.add_argument("--blocks", default="2,2,2,2,2,1")
  ap.add_argument("--width-mult", type=float, default=0.25)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  rows = [time_step(impl, switched, args.k, args.blocks, args.width_mult, args.batch,
                    args.steps)
          for switched in (False, True) for impl in ("xla", "shifted")]
  for r in rows:
    print(f"{r['program']:>8} {r['depthwise_impl']:>7}: compile {r['compile_s']:.1f} s, "
          f"step {1e3 * r['step_s_median']:.1f} ms")
  result = {"backend": jax.default_backend(), "machine": platform.machine(),
            "args": vars(args), "rows": rows}
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
