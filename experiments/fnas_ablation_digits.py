"""The FNAS ablation, smaller, on the digits RADARS search (the quickstart).

    python experiments/fnas_ablation_digits.py --seeds 3 \\
        --json experiments/results/fnas_ablation_digits.json

The variants of `experiments/fnas_ablation.py` (plain, +uncertainty,
+replay, +transfer, all) and the knowledge pool (`+pool`: plain with
`radars.pool_similarity`), each a `python -m radars_jax.main --config
configs/digits.py` run per seed in its own workdir. `+transfer` and `all`
start from the controller of another digits search (seed + 100, the same
variant without transfer: `controller.transfer_from`, with its policy).
Reported per variant: the final search's holdout accuracy, the best sample's
reward and the search's seconds, mean over seeds, and every run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import fnas_ablation

ROOT = Path(__file__).resolve().parents[1]
PLAIN = {"controller.uncertainty": "none", "controller.replay_weight": "0.0"}
VARIANTS = {   # overrides of configs/digits.py, and whether the controller is carried
    "plain": (PLAIN, False),
    "+uncertainty": ({**PLAIN, "controller.uncertainty": "scale_advantage"}, False),
    "+replay": ({**PLAIN, "controller.replay_weight": "0.5"}, False),
    "+pool": ({**PLAIN, "radars.pool_similarity": "True"}, False),
    "+transfer": (PLAIN, True),
    "all": ({"controller.uncertainty": "scale_advantage", "controller.replay_weight": "0.5",
             "radars.pool_similarity": "True"}, True),
}


def run_main(config: str, workdir: Path, *flags: str) -> dict:
  """`python -m radars_jax.main --config configs/CONFIG` in `workdir` with
  `flags`: its summary.json (a search) or eval.json (a training)."""
  done = subprocess.run([sys.executable, "-m", "radars_jax.main",
                         f"--config={ROOT / 'configs' / config}", f"--workdir={workdir}",
                         "--config.progress_bar=False", *flags], capture_output=True, text=True,
                        cwd=ROOT, timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT)})
  if done.returncode != 0:
    raise RuntimeError(f"{workdir}: exit {done.returncode}: {done.stderr[-2000:]}")
  name = "summary.json" if (workdir / "summary.json").exists() else "eval.json"
  return json.loads((workdir / name).read_text())


def search(workdir: Path, seed: int, overrides: dict) -> dict:
  s = run_main("digits.py", workdir, f"--config.seed={seed}",
               *(f"--config.{k}={v}" for k, v in overrides.items()))
  return {"seed": seed, "val_accuracy": s["val_accuracy"], "genotype": s["genotype"],
          "best_sample_reward": (s["best_sample"] or {}).get("reward"),
          "search_seconds": s["search_seconds"], "pool_hit_ratio": s.get("pool_hit_ratio")}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  result = {"seeds": args.seeds, "variants": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.variants.split(","):
      overrides, transfer = VARIANTS[name]
      runs = []
      for seed in range(args.seeds):
        extra = {}
        if transfer:
          source = Path(tmp) / f"{name}_source_{seed}"
          search(source, seed + 100, overrides)
          extra = {"controller.transfer_from": str(source), "controller.transfer_policy": "True"}
        runs.append(search(Path(tmp) / f"{name}_{seed}", seed, {**overrides, **extra}))
      entry = {"overrides": overrides, "transfer": transfer, "runs": runs,
               **{f"{k}_mean": float(np.mean([r[k] for r in runs]))
                  for k in ("val_accuracy", "best_sample_reward", "search_seconds")}}
      result["variants"][name] = entry
      print(f"{name:13s} accuracy {entry['val_accuracy_mean']:.4f}  best sample "
            f"{entry['best_sample_reward_mean']:.4f}  search {entry['search_seconds_mean']:.1f} s"
            f"  ({', '.join(format(r['val_accuracy'], '.4f') for r in runs)})", flush=True)
      if args.json:
        fnas_ablation.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
