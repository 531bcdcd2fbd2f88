"""Smoke tests of the benchmark scripts in experiments/ (tiny spaces; no timing)."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radars_jax.nas import genotypes

import conftest

ROOT = Path(__file__).resolve().parents[1]


def test_memory_scaling_small_runs_and_radars_fits(tmp_path):
  out = tmp_path / "ms.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "memory_scaling.py"), "--small",
       "--ns", "2,4", "--json", str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  rows = data["rows"]
  assert [r["num_ops"] for r in rows] == [2, 4]
  assert data["layers"] == 1 and data["mode"] == "single_level"   # both sides' step
  budget = data["budget_bytes"]
  assert rows[0]["darts_fits"] and not rows[-1]["darts_fits"]   # full DARTS crosses it
  for r in rows:
    assert r["radars_k"] >= 1 and r["radars_bytes"] <= budget    # RADARS never does
  assert (tmp_path / "ms.png").exists()
  assert "RADARS k" in result.stdout
  bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "memory_scaling.py"),
                        "--ns", "8,x"], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert bad.returncode == 2 and "memory_scaling: error" in bad.stderr


def test_throughput_small_runs_and_writes_its_figures(tmp_path):
  """Two ops per edge, tiny shapes, one timed step: checks the script and its
  JSON, never the speed (benchmarks are not tests)."""
  out = tmp_path / "tp.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "throughput.py"), "--small", "--num-ops", "2",
       "--modes", "single_level", "--steps", "1", "--warmup", "1", "--depthwise-impl",
       "shifted", "--no-peer", "--json", str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["peer_skipped"] == "--no-peer"
  (row,) = data["rows"]
  ours = row["ours"]
  assert row["mode"] == "single_level" and row["ratio"] is None
  assert ours["images_per_s"] > 0 and ours["compile_s"] > 0 and ours["step_bytes"] > 0
  assert ours["depthwise_impl"] == "shifted" and len(ours["step_s_all"]) == 1
  # images per second from the timed step itself: --small's batch of 8 over
  # the median (here: the one) step time
  assert ours["step_s_median"] == ours["step_s_all"][0] > 0
  assert ours["images_per_s"] == pytest.approx(8 / ours["step_s_all"][0], rel=1e-9)
  assert "images/s" in result.stdout
  bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "throughput.py"),
                        "--modes", "third_order"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert bad.returncode == 2 and "unknown mode" in bad.stderr


def test_shared_programs_small_runs_and_writes_its_figures(tmp_path):
  """k = 1 on a 4-channel, one-cell-per-stage digits supernet, one timed
  step: checks the script and its JSON, never the speed."""
  out = tmp_path / "sp.json"
  script = str(ROOT / "experiments" / "shared_programs.py")
  env = dict(os.environ)
  # one device: the whole batch's bytes, apart at 0.01 MB
  env["XLA_FLAGS"] = conftest.ONE_DEVICE_XLA_FLAGS
  result = subprocess.run(
      [sys.executable, script, "--ks", "1", "--steps", "1", "--set", "supernet.channels=4",
       "--set", "supernet.cells_per_stage=1", "--set", "data.batch_size=16", "--json",
       str(out)],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["space"] == "nb201" and data["batch_size"] == 16 and data["channels"] == 4
  (row,) = data["rows"]
  assert row["k"] == 1 and all(len(ops) == 1 for ops in row["subspace"])
  for name in ("bytes", "compile_seconds", "step_ms"):
    assert row[f"shared_{name}"] > 0 and row[f"static_{name}"] > 0
  # k = 1's worst case is the costliest op, nor_conv_3x3 (index 3), on every
  # edge; the printed figures are the JSON's.
  assert row["subspace"] == [[3]] * 6
  shared, static = (f"{row[f'{p}_bytes'] / 1e6:.2f}" for p in ("shared", "static"))
  assert shared != static   # (else the line below could not tell them apart)
  assert f"k=1: shared {shared} MB" in result.stdout
  assert f"static {static} MB" in result.stdout
  bad = subprocess.run([sys.executable, script, "--ks", "0"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
  assert bad.returncode == 2 and "shared_programs: error" in bad.stderr


def test_throughput_interleaves_ours_with_every_peer_run():
  """The ratio's two sides are interleaved (ours, peer, ours, peer, ours) so
  a drifting machine speed moves both; each round's ratio takes our blocks
  on either side of its peer run."""
  throughput = conftest.import_experiment("throughput")
  calls, speed = [], iter([1.0, 2.0, 4.0])   # our step seconds, block by block

  def run_ours(n):
    calls.extend(["ours"] * n)
    return [next(speed)] * n

  def run_peer():
    calls.append("peer")
    return {"images_per_s": 2.0}

  blocks, peers = throughput.interleave(run_ours, 2, 2, run_peer)
  assert calls == ["ours", "ours", "peer", "ours", "ours", "peer", "ours", "ours"]
  assert blocks == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]] and len(peers) == 2
  # round 1: median step 1.5 s -> 8 / 1.5 images/s against 2; round 2: 3 s
  assert throughput.round_ratios(blocks, peers, 8) == [8 / 1.5 / 2, 8 / 3 / 2]
  calls.clear()
  speed = iter([1.0])
  blocks, peers = throughput.interleave(run_ours, 3, 2)   # no peer: one block
  assert calls == ["ours"] * 3 and peers == [] and blocks == [[1.0] * 3]


def test_throughput_peer_runs_on_the_backend_of_ours():
  """On a GPU the peer must run on CUDA too (a CPU peer would flatter the
  ratio); an explicit --peer-device wins."""
  throughput = conftest.import_experiment("throughput")
  assert throughput.peer_device("auto", "gpu") == "cuda"
  assert throughput.peer_device("auto", "cpu") == "cpu"
  assert throughput.peer_device("auto", "tpu") == "cpu"
  assert throughput.peer_device("cpu", "gpu") == "cpu"


def test_ppo_teacher_small_runs_and_writes_its_figures(tmp_path):
  """CartPole, three tiny updates: the script's figures and files (never
  the speed or the return)."""
  out = tmp_path / "teacher.json"
  env = dict(os.environ, XLA_FLAGS=conftest.ONE_DEVICE_XLA_FLAGS)
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "ppo_teacher.py"), "--env", "CartPole-v1",
       "--updates", "3", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
       "--json", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["env"] == "CartPole-v1" and data["env_steps"] == 3 * 4 * 16
  assert len(data["history"]) == 3 and data["env_steps_per_second"] > 0
  assert data["return_after"]["episodes"] == 64
  assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "environment steps/s" in result.stdout
  bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "ppo_teacher.py"),
                        "--env", "Pong"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
  assert bad.returncode == 2 and "unknown environment 'Pong'" in bad.stderr


def test_accelerator_check_small_reports_the_device_and_each_subspace_s_bytes(tmp_path):
  """Its device and memory parts on this CPU (no memory limit, so no peak):
  the parts' JSON, XLA's bytes of each subspace and the cost model's
  estimate near them (the throughput and cifar parts run the scripts
  tested above and the quickstart)."""
  out = tmp_path / "check.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "accelerator_check.py"), "--small",
       "--parts", "device,memory", "--limits", "memory=400", "--json", str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  parts = json.loads(out.read_text())["parts"]
  assert parts["device"]["ok"], parts["device"]
  device = parts["device"]["result"]
  assert device["backend"] == "cpu" and device["bytes_limit"] is None
  assert parts["memory"]["ok"], parts["memory"]
  rows = parts["memory"]["result"]["rows"]
  assert [r["subspace"] for r in rows] == ["worst case, 1 op", "random, 2 ops", "whole space"]
  for row in rows:
    assert row["ok"], row
    assert row["result"]["compiled_bytes"] > 0 and row["result"]["peak_bytes"] is None
    assert abs(row["estimate_vs_compiled"]) < 0.25, row
  assert "2 of 2 parts ok" in result.stdout


def test_compare_methods_tiny_runs_refuses_and_retrains(tmp_path):
  """Two methods, one seed, the digits quickstart cut to one sample: the
  whole-space Single-DARTS refused by the budget with its bytes, the random
  search completed, retrained for one epoch, its latency timed; JSON,
  table and plot written (the numbers are not checked: benchmarks are not
  tests)."""
  out = tmp_path / "compare.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "compare_methods.py"), "--setting",
       "digits_nb201", "--methods", "single_darts,random", "--seeds", "1", "--retrain-epochs", "1",
       "--override", "radars.max_iterations=1", "--override",
       "controller.samples_per_iteration=1", "--override", "radars.subspace_epochs=0.5",
       "--override", "dnas.epochs=1", "--override", "dnas.derived_finetune_steps=0",
       # (the kernels the quickstart's budget is sized for: just under the
       # whole space's Single-DARTS step; scanned and recomputed it fits)
       "--override", "supernet.scan_edges=False", "--override", "supernet.depthwise_impl=xla",
       "--json", str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=900,
      env={**os.environ, "XLA_FLAGS": conftest.ONE_DEVICE_XLA_FLAGS})   # (the budget is per device)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  whole, random_ = data["runs"]
  assert whole["outcome"] == "refused (memory)"
  assert whole["step_bytes"] > data["budget_gb"] * 1e9
  assert random_["outcome"] == "completed" and 0 <= random_["test_accuracy"] <= 1
  assert random_["latency_s"] > 0 and random_["flops"] > 0 and random_["search_seconds"] > 0
  assert data["methods"]["random"]["outcomes"] == {"completed": 1}
  assert "| single_darts | 1 refused (memory) |" in result.stdout
  assert out.with_suffix(".png").exists()


def test_imagenet_input_prepares_reads_and_writes_its_figures(tmp_path):
  out = tmp_path / "input.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "imagenet_input.py"), "--classes", "2",
       "--per-class", "8", "--val", "8", "--height", "40", "--width", "50", "--size", "32",
       "--batch", "8", "--steps", "2", "--threads", "1", "--json", str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["images"] == {"train": 16, "val": 8, "jpeg": "50x40"}
  assert data["reader_threads"] == 1 and data["train_images_per_s"] > 0


def test_compare_methods_without_retraining_sizes_the_network_and_plots_bytes(tmp_path):
  """The synthetic CIFAR / ImageNet settings retrain nothing: a found
  genotype gets its network's weights, FLOPs and latency at the setting's
  image size, and the plot shows each run's worst step against the budget."""
  compare = conftest.import_experiment("compare_methods")
  costs = compare.network_costs(
      genotypes.load_genotype("MOBILENET_V2_LIKE"), "imagenet_train.py",
      {"data.name": "synthetic", "data.image_size": 32, "data.num_classes": 10}, 1)
  assert costs["weights"] > 10**6 and costs["flops"] > 0 and costs["latency_s"] > 0
  runs = [{"method": "radars", "seed": 0, "outcome": "stopped (time)", "search_seconds": 60.0,
           "step_bytes": 5e9},
          {"method": "single_darts", "seed": 0, "outcome": "refused (memory)",
           "step_bytes": 3e10}]
  result = {"setting": "imagenet_synthetic", "budget_gb": 12.0, "max_seconds": 600.0,
            "methods": compare.aggregate(runs), "runs": runs}
  compare.plot(result, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").stat().st_size > 0
  assert "| single_darts | 1 refused (memory) | - | 30000.0 ± 0.0 |" in compare.table(result)
  # a rerun with the same --workdir reads back the searches that ended
  args = argparse.Namespace(max_seconds=600.0)
  assert compare._finished({"genotype": {"ops": []}}, args)   # pylint: disable=protected-access
  assert compare._finished({"stopped": "time", "max_seconds": 600.0}, args)   # pylint: disable=protected-access
  assert not compare._finished({"stopped": "time", "max_seconds": 300.0}, args)   # pylint: disable=protected-access
