"""The rl / random baselines on the RADARS loop (rl also on the shared
program, with a crash and resume), and the refusals of impossible budgets.
(Kept apart from test_radars.py so that the suite's two workers share the
loop's tests.)"""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

import conftest

from radars_jax import checkpointing
from radars_jax import parallel
from radars_jax.radars import programs
from radars_jax.radars import loop as radars_loop
from radars_jax.nas import spaces
from radars_jax.tabular import table as table_lib
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from test_radars import Crash, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", ["rl", "random"])
def test_baselines_sample_whole_architectures(tmp_path, method, monkeypatch):
  """rl (with shared programs, their cells' edges scanned, and no budget):
  every sample (k = 1) runs on the one shared program, and a run killed
  inside a sample's DNAS (whose state holds the slots) resumes to the
  uninterrupted result (test_budget.py runs the per-edge shared program).
  random: the same search on 1 and 4 devices."""
  config = tiny_config(method)
  config.radars.max_iterations = 1
  config.radars.shared_programs = method == "rl"
  config.supernet.scan_switched = method == "rl"
  shared_compiles = []
  original = programs.LoopPrograms.compile_shared_now

  def recording(self, k, steps):
    shared_compiles.append((k, threading.current_thread().name.startswith("radars-compile"),
                            self.searcher.shared.model().scan_switched))
    return original(self, k, steps)

  monkeypatch.setattr(programs.LoopPrograms, "compile_shared_now", recording)
  # XLA compiles on the loop's thread during each sample
  loop_compiles, counting = [], []
  original_run_sample = radars_loop.RadarsSearch.run_sample

  def counted_run_sample(self, *args, **kwargs):
    counting.append(0)
    try:
      return original_run_sample(self, *args, **kwargs)
    finally:
      loop_compiles.append(counting.pop())

  def listener(event, duration, **_):
    if (counting and event == "/jax/core/compile/backend_compile_duration"
        and threading.current_thread() is threading.main_thread()):
      counting[-1] += 1

  monkeypatch.setattr(radars_loop.RadarsSearch, "run_sample", counted_run_sample)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / method),
                         spaces.make_space("nb201"))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  runs = summary["subspace_runs"]
  assert len(runs) == 2 and all(r["ops_per_choice_point"] == [1] * 6 for r in runs)
  assert summary["val_accuracy"] == max(r["val_accuracy"] for r in runs)
  # A whole architecture per sample: its genotype is the sampled cell itself,
  # and the search returns the best sample's.
  names = spaces.make_space("nb201").op_names
  best = max(runs, key=lambda r: r["val_accuracy"])
  assert summary["genotype"]["ops"] == [names[a[0]] for a in best["subspace"]]
  assert summary["genotype"]["arch_str"] == table_lib.arch_str_from_ops(   # (its own writer)
      [a[0] for a in best["subspace"]])
  if method == "random":
    # The same search on one device: the same samples (drawn on the host),
    # each DNAS data-parallel over 4 devices or not (the sums' order differs:
    # test_search.py bounds what that moves), the same rewards and genotype.
    one = make_mesh_of_one_device(monkeypatch)
    single = radars_loop.run(config, workdir_lib.prepare(tmp_path / "one_device"),
                             spaces.make_space("nb201"))
    assert one and summary["devices"] == 4 and single["devices"] == 1
    assert [r["subspace"] for r in single["subspace_runs"]] == [r["subspace"] for r in runs]
    np.testing.assert_allclose([r["reward"] for r in single["subspace_runs"]],
                               [r["reward"] for r in runs], atol=1e-6)
    assert single["genotype"] == summary["genotype"]
    # each sample's training loss (a continuous figure; the rewards are
    # accuracies on 32 examples): as close as test_search.py's DNAS
    losses = [dnas_losses(tmp_path / name / "metrics.jsonl") for name in (method, "one_device")]
    assert len(losses[0]) >= 2
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)
    return
  # One shared program (k = 1, its edges scanned), compiled in the
  # background while the cost model calibrated.
  assert summary["shared_program_runs"] == 2 and shared_compiles == [(1, True, True)]
  assert [c["ahead"] for c in summary["compiles"] if c["what"].startswith("shared")] == [True]
  # The second sample finds every program of the first (train step, its
  # initial state, evaluator, fine-tune): the loop compiles nothing.
  assert len(loop_compiles) == 2 and loop_compiles[1] == 0, loop_compiles
  path = workdir_lib.prepare(tmp_path / "resumed")
  original_save = checkpointing.Checkpointer.save

  def crashing_save(self, step, state, metadata=None):
    original_save(self, step, state, metadata)
    if "dnas" in str(self.directory) and "it0_s1" in str(self.directory):
      self.wait()
      raise Crash("killed mid-DNAS")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", crashing_save)
  with pytest.raises(Crash):
    radars_loop.run(config, path, spaces.make_space("nb201"))
  monkeypatch.setattr(checkpointing.Checkpointer, "save", original_save)
  resumed = radars_loop.run(config, path, spaces.make_space("nb201"))
  assert resumed["genotype"] == summary["genotype"] and resumed["shared_program_runs"] == 2
  np.testing.assert_allclose([r["reward"] for r in resumed["subspace_runs"]],
                             [r["reward"] for r in runs], atol=1e-6)


def dnas_losses(metrics_file: Path) -> list:
  """The `dnas/loss` values a search logged, in order."""
  records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
  return [r["value"] for r in records if r["name"] == "dnas/loss"]


def make_mesh_of_one_device(monkeypatch) -> list:
  """Makes `parallel.make_mesh()` build a mesh of one device; the returned
  list records each mesh built."""
  built = []
  make_mesh = parallel.make_mesh

  def one_device(devices=None):
    built.append(1)
    return make_mesh(jax.devices()[:1] if devices is None else devices)

  monkeypatch.setattr(parallel, "make_mesh", one_device)
  return built


def test_radars_needs_a_budget_and_refuses_an_impossible_one(tmp_path):
  config = tiny_config()
  with pytest.raises(UserError, match="memory_budget_gb"):
    radars_loop.run(config, workdir_lib.prepare(tmp_path / "a"), spaces.make_space("nb201"))
  config.memory_budget_gb = 1e-6
  with pytest.raises(UserError, match="one op per choice point needs"):
    radars_loop.run(config, workdir_lib.prepare(tmp_path / "b"), spaces.make_space("nb201"))


def test_over_budget_darts_run_is_refused_with_the_needed_size(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = conftest.ONE_DEVICE_XLA_FLAGS
  result = subprocess.run(
      [sys.executable, "-m", "radars_jax.main", f"--config={ROOT / 'configs' / 'digits.py'}",
       f"--workdir={tmp_path / 'w'}", "--config.method=darts", "--config.data.name=synthetic",
       "--config.data.image_size=8", "--config.supernet.channels=4",
       "--config.data.batch_size=16", "--config.data.holdout_size=32",
       "--config.memory_budget_gb=0.0001"],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  line = [l for l in result.stderr.splitlines() if l.startswith("radars_jax: error")][0]
  assert "needs" in line and "MB per step" in line and "method=radars" in line
  assert "Traceback" not in result.stderr
