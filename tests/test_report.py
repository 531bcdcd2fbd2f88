"""Tests of radars_jax.report on fake workdirs (no JAX, no training)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from radars_jax import report
from radars_jax.report import page
from radars_jax.report import plots
from radars_jax.report import style
from radars_jax.errors import UserError

DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
LARGE_EXTRA_OPS = ["sep_conv_7x7", "dil_conv_7x7", "dil4_conv_3x3", "nor_conv_1x1",
                   "nor_conv_3x3", "conv_1x3_3x1", "conv_1x7_7x1", "max_pool_5x5",
                   "avg_pool_5x5", "mbconv_3x3_e3", "mbconv_3x3_e6", "mbconv_5x5_e3",
                   "mbconv_5x5_e6", "mbconv_7x7_e3", "mbconv_7x7_e6"]
DARTS_EDGES = [(j, i + 2) for i in range(4) for j in range(2 + i)]

# DARTS V2 (Liu et al., 2019).
DARTS_V2 = {
    "space": "darts",
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0],
               ["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["skip_connect", 0],
               ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2],
               ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2],
               ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def _write(path: Path, obj) -> None:
  path.write_text(json.dumps(obj))


def _metrics(path: Path, names, steps: int, rng) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for step in range(steps):
      for k, name in enumerate(names):
        value = float(np.exp(-step / steps * (k + 1)) + 0.05 * rng.random())
        f.write(json.dumps({"step": step, "name": name, "value": value}) + "\n")


def make_darts_search(workdir: Path, ops=DARTS_OPS, iterations: int = 6, seed: int = 0) -> Path:
  """A RADARS search on the DARTS space: 28 choice points, all ops active."""
  rng = np.random.default_rng(seed)
  workdir.mkdir(parents=True, exist_ok=True)
  names = [f"{cell}/{j}->{i}" for cell in ("normal", "reduce") for j, i in DARTS_EDGES]
  subspace = [list(range(len(ops))) for _ in names]
  alphas = [(rng.normal(size=len(ops)) * 1.0).tolist() for _ in names]
  summary = {
      "method": "radars", "mode": "first_order", "space": "darts", "dataset": "cifar10",
      "seed": seed, "genotype": DARTS_V2, "val_accuracy": 0.8731, "train_loss": 0.41,
      "search_seconds": 4321.5, "compile_seconds": 98.2, "step_bytes": 7.5e9,
      "memory_budget_bytes": 8e9, "steps": 12345, "devices": 1,
      "supernet_weights": 1_930_000, "choice_points": names, "space_ops": list(ops),
      "subspace": subspace, "alphas": alphas, "k": 3, "iterations": iterations,
      "compiles": [{"what": "shared step, 3 ops per choice point", "compile_seconds": 41.24,
                    "waited_seconds": 4.0, "bytes": 6_200_000_000, "ahead": True},
                   {"what": "static step, final search", "compile_seconds": 30.0,
                    "waited_seconds": 31.5, "bytes": 7_500_000_000}],
  }
  _write(workdir / "summary.json", summary)
  _write(workdir / "genotype.json", DARTS_V2)
  _metrics(workdir / "metrics.jsonl",
           ["dnas/loss", "dnas/accuracy", "dnas/weight_lr", "radars/best_reward"], 120, rng)
  history, alive = [], np.ones((len(names), len(ops)), bool)
  for it in range(iterations):
    for c in range(len(names)):
      live = np.flatnonzero(alive[c])
      if len(live) > 2 and rng.random() < 0.5:
        alive[c, rng.choice(live)] = False
    probs = rng.random((len(names), len(ops))) * alive
    probs /= probs.sum(axis=1, keepdims=True)
    rewards = (0.5 + 0.05 * it + 0.05 * rng.random(4)).tolist()
    history.append({
        "iteration": it, "rewards": rewards, "best_reward": max(rewards),
        "alive": alive.tolist(), "policy_probs": probs.tolist(),
        "entropy": float(2.0 - 0.2 * it), "k": 3, "step_bytes": 6e9 + 2e8 * it,
    })
  _write(workdir / "history.json", history)
  return workdir


def make_nb201_search(workdir: Path, seed: int = 1) -> Path:
  rng = np.random.default_rng(seed)
  workdir.mkdir(parents=True, exist_ok=True)
  names = [f"cell/{j}->{i}" for i in range(1, 4) for j in range(i)]
  ops = ["nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "nor_conv_3x3"]
  genotype = {"space": "nb201", "ops": ops,
              "arch_str": "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|"
                          "+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"}
  subspace = [[0, 1, 2, 3, 4], [0, 2], [1, 2, 3], [0, 1, 2, 3, 4], [3, 4], [1, 3]]
  summary = {
      "method": "darts", "space": "nb201", "dataset": "cifar10", "seed": seed,
      "genotype": genotype, "val_accuracy": 0.71, "search_seconds": 80.0,
      "compile_seconds": 12.0, "step_bytes": 1.2e9, "memory_budget_bytes": None,
      "choice_points": names, "space_ops": NB201_OPS, "subspace": subspace,
      "alphas": [rng.normal(size=len(s)).tolist() for s in subspace],
  }
  _write(workdir / "summary.json", summary)
  _write(workdir / "genotype.json", genotype)
  _metrics(workdir / "metrics.jsonl", ["dnas/loss", "dnas/accuracy"], 25, rng)
  return workdir


def make_training(workdir: Path, seed: int = 2) -> Path:
  rng = np.random.default_rng(seed)
  workdir.mkdir(parents=True, exist_ok=True)
  _write(workdir / "eval.json", {
      "test_accuracy": 0.9712, "weights": 3_349_342, "flops": 528_000_000,
      "epochs": 600, "seconds": 51234.0, "genotype": DARTS_V2})
  _metrics(workdir / "metrics.jsonl", ["train/loss", "train/accuracy", "train/lr",
                                       "eval/test_accuracy"], 40, rng)
  return workdir


def _check_pngs(outdir: Path, names) -> None:
  page = (outdir / "index.html").read_text()
  for name in names:
    path = outdir / name
    assert path.is_file(), name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (name, width, height)
    assert pixels.std() > 0.01, f"{name} is blank"
    assert f"src='{name}'" in page, name
  linked = set(re.findall(r"src='([^']+)'", page))
  assert linked == set(names), linked ^ set(names)
  assert not list(outdir.glob("*.tmp"))


def test_darts_radars_search(tmp_path):
  workdir = make_darts_search(tmp_path / "search")
  outdir = report.write_report(workdir)
  assert outdir == workdir / "report"
  _check_pngs(outdir, ["cell_normal.png", "cell_reduce.png", "alphas.png",
                       "curves_dnas.png", "curves_radars.png", "radars_rewards.png",
                       "radars_alive.png", "radars_policy.png", "radars_progress.png"])
  page = (outdir / "index.html").read_text()
  assert "sep_conv_3x3(c_{k-2})" in page and "87.31 %" in page
  assert "Not drawn" not in page
  # one row per train-step compile: what, bytes, compile and waited seconds,
  # which thread compiled it (a record of before `ahead` existed: the loop)
  assert ("<tr><td>shared step, 3 ops per choice point</td><td>6.2 GB</td>"
          "<td>41.2 s</td><td>4.0 s</td><td>background</td></tr>") in page
  assert ("<tr><td>static step, final search</td><td>7.5 GB</td>"
          "<td>30.0 s</td><td>31.5 s</td><td>the loop</td></tr>") in page


def test_large_space_heatmap_stays_readable(tmp_path):
  ops = DARTS_OPS + LARGE_EXTRA_OPS   # the 23 ops of darts_large
  workdir = make_darts_search(tmp_path / "large", ops=ops, iterations=3)
  outdir = report.write_report(workdir)
  height, width = mpimg.imread(outdir / "alphas.png").shape[:2]
  assert width <= 4000 and height <= 4000


def test_nb201_search(tmp_path):
  outdir = report.write_report(make_nb201_search(tmp_path / "nb201"))
  _check_pngs(outdir, ["cell.png", "alphas.png", "curves_dnas.png"])
  assert "|nor_conv_3x3~0|" in (outdir / "index.html").read_text()


def test_training(tmp_path):
  outdir = report.write_report(make_training(tmp_path / "train"))
  _check_pngs(outdir, ["cell_normal.png", "cell_reduce.png", "curves_train.png",
                       "curves_eval.png"])
  page = (outdir / "index.html").read_text()
  assert "97.12 %" in page and "3,349,342" in page


def test_optional_files_missing_or_broken(tmp_path):
  workdir = make_nb201_search(tmp_path / "w")
  (workdir / "metrics.jsonl").write_text('{"step": 0, "name": "dnas/loss", "value": 1.0}\n{"st')
  (workdir / "history.json").write_text("[not json")
  (workdir / "genotype.json").unlink()
  outdir = report.write_report(workdir)
  _check_pngs(outdir, ["cell.png", "alphas.png", "curves_dnas.png"])
  page = (outdir / "index.html").read_text()
  assert "history.json" in page and "unreadable line" in page

  summary = json.loads((workdir / "summary.json").read_text())
  summary["genotype"] = {"space": "nb201", "ops": ["none"] * 4}  # malformed
  for key in ("alphas", "subspace"):
    summary.pop(key)
  (workdir / "summary.json").write_text(json.dumps(summary))
  (workdir / "metrics.jsonl").unlink()
  outdir = report.write_report(workdir)
  assert "cell drawing" in (outdir / "index.html").read_text()


def test_short_search_and_training_stay_readable(tmp_path):
  """A search that barely moved its alphas: three decimals (the boxed
  strongest op must show a larger number than its row); a training
  evaluated once: one point on an integer step axis."""
  workdir = make_nb201_search(tmp_path / "s")
  summary = json.loads((workdir / "summary.json").read_text())
  rng = np.random.default_rng(0)
  summary["alphas"] = [(1e-3 * rng.normal(size=len(s))).tolist() for s in summary["subspace"]]
  _write(workdir / "summary.json", summary)
  (workdir / "metrics.jsonl").write_text(
      '{"step": 8, "name": "test/accuracy", "value": 0.125}\n')
  outdir = report.write_report(workdir)
  _check_pngs(outdir, ["cell.png", "alphas.png", "curves_test.png"])
  near_uniform = np.full((2, 5), 0.2) + np.array([[1e-4, 0, 0, 0, 0], [0, 3e-4, 0, 0, 0]])
  assert plots._alpha_format(near_uniform) == "{:.3f}"  # pylint: disable=protected-access
  spread = np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.3, 0.25, 0.25, 0.1, 0.1]])
  assert plots._alpha_format(spread) == "{:.2f}"  # pylint: disable=protected-access


def test_not_a_workdir(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    report.write_report(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no summary.json or eval.json"):
    report.write_report(tmp_path / "empty")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "summary.json").write_text("{")
  with pytest.raises(UserError, match="summary.json"):
    report.write_report(tmp_path / "bad")


def test_cli(tmp_path):
  run = subprocess.run([sys.executable, "-m", "radars_jax.report", str(tmp_path / "nope")],
                       capture_output=True, text=True, check=False)
  assert run.returncode == 2
  assert len(run.stderr.strip().splitlines()) == 1 and "error" in run.stderr
  workdir = make_training(tmp_path / "t")
  assert page.main([str(workdir)]) == 0
  assert (workdir / "report" / "index.html").is_file()


def test_op_family():
  assert [style.op_family(o) for o in ("none", "max_pool_3x3", "skip_connect",
                                       "sep_conv_3x3", "mbconv_3x3_e6", "nor_conv_1x1")] == \
      ["none", "pool", "skip", "conv", "conv", "conv"]


def test_radars_plots_of_a_search_with_no_iteration(tmp_path):
  """The whole space fit the budget: the final search ran at once, and the
  plots of iterations are skipped, not a crash."""
  assert plots.plot_history([], {"choice_points": ["a"], "space_ops": ["x"]}, tmp_path) == []
  assert not list(tmp_path.iterdir())
