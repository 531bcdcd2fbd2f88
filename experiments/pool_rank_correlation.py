"""Does a sample's reward rank architectures as retraining does? With and
without the knowledge pool's similarity (`radars.pool_similarity`).

    python experiments/pool_rank_correlation.py --seeds 2 \\
        --json experiments/results/pool_rank_correlation.json

For each seed and each setting, the digits RADARS search (`configs/digits.py`)
runs; every sampled subspace's derived cell is then retrained from scratch
by `configs/digits_train.py` (its NB-201 skeleton, 15 epochs) and the
Spearman rank correlation between the samples' rewards and their retrained
test accuracies is reported per run and over all the setting's samples,
with the search's final accuracy and seconds.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import fnas_ablation
from fnas_ablation_digits import run_main


def spearman(x, y) -> float:
  """Spearman's rho (average ranks for ties)."""
  def ranks(v):
    v = np.asarray(v, float)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for value in np.unique(v):   # ties share their mean rank
      r[v == value] = r[v == value].mean()
    return r
  rx, ry = ranks(x), ranks(y)
  return float(np.corrcoef(rx, ry)[0, 1])


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, default=2)
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  result = {"seeds": args.seeds, "settings": {}}
  retrained: dict[str, float] = {}   # arch string -> retrained test accuracy
  with tempfile.TemporaryDirectory() as tmp:
    for similarity in (False, True):
      name = "similarity" if similarity else "exact"
      runs, rewards_all, accuracies_all = [], [], []
      for seed in range(args.seeds):
        s = run_main("digits.py", Path(tmp) / f"{name}_{seed}", f"--config.seed={seed}",
                     f"--config.radars.pool_similarity={similarity}")
        samples = [r for r in s["subspace_runs"] if r["iteration"] != "final"]
        for r in samples:
          arch = r["genotype"]["arch_str"]
          if arch not in retrained:
            retrained[arch] = run_main("digits_train.py",
                                       Path(tmp) / f"train_{len(retrained)}",
                                       f"--config.genotype={arch}")["test_accuracy"]
        rewards = [r["reward"] for r in samples]
        accuracies = [retrained[r["genotype"]["arch_str"]] for r in samples]
        rewards_all += rewards
        accuracies_all += accuracies
        runs.append({"seed": seed, "val_accuracy": s["val_accuracy"],
                     "search_seconds": s["search_seconds"], "rewards": rewards,
                     "retrained_test_accuracies": accuracies,
                     "spearman": spearman(rewards, accuracies),
                     "pool_hit_ratio": s["pool_hit_ratio"]})
        print(f"{name:10s} seed {seed}: spearman {runs[-1]['spearman']:+.2f}, final "
              f"{s['val_accuracy']:.4f}, search {s['search_seconds']:.1f} s, pool "
              f"{s['pool_hit_ratio']:.0%}", flush=True)
      result["settings"][name] = {
          "runs": runs, "spearman_all": spearman(rewards_all, accuracies_all),
          "spearman_mean": float(np.mean([r["spearman"] for r in runs])),
          "val_accuracy_mean": float(np.mean([r["val_accuracy"] for r in runs])),
          "search_seconds_mean": float(np.mean([r["search_seconds"] for r in runs]))}
      print(f"{name:10s} spearman over all samples {result['settings'][name]['spearman_all']:+.2f}",
            flush=True)
      if args.json:
        fnas_ablation.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
