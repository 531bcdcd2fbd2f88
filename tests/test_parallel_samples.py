"""RADARS's samples trained at the same time (`radars.devices_per_sample`)
on the suite's four CPU devices: a search whose samples train two at once
(2 rows of 2 devices), crashed inside its first group and resumed, ends with
the rewards, weight pool and controller of the same search whose samples
train one after another. (The four devices share two cores here: this tests
correctness, not speed.)"""
import copy

import jax
import numpy as np
import pytest

from radars_jax import checkpointing
from radars_jax import config_check
from radars_jax.errors import UserError
from radars_jax.nas import spaces
from radars_jax.radars import loop as radars_loop
from radars_jax import workdir as workdir_lib

from test_radars import crash_after_dnas_checkpoint, tiny_config, whole_space_step_bytes


def parallel_config(devices_per_sample: int):
  """test_radars's budgeted search on 16x16 images in batches of 32,
  where activations outweigh the switched supernet's weights: a row of 2
  devices, each with half the batch, fits a budget under the whole space's
  step with a quarter of the batch (0.79 of it)."""
  config = tiny_config()
  config.data.update(image_size=16, batch_size=32, train_size=160)
  config.memory_budget_gb = 0.9 * whole_space_step_bytes(config) / 1e9
  config.radars.budget_margin = 0.0
  config.radars.shared_programs = config.radars.fair_pool = True
  config.radars.devices_per_sample = devices_per_sample
  return config


def search_state(path):
  """The final search checkpoint's arrays, {leaf path: host array}."""
  with checkpointing.Checkpointer(path / "checkpoints" / "search") as ckpt:
    _, tree, _ = ckpt.restore_latest()
  return tree


def test_parallel_samples_equal_the_sequential_search(tmp_path, monkeypatch):
  space = spaces.make_space("nb201")
  config = parallel_config(0)
  sequential = radars_loop.run(config, workdir_lib.prepare(tmp_path / "sequential"), space)
  config = parallel_config(2)
  path = workdir_lib.prepare(tmp_path / "parallel")
  crash_after_dnas_checkpoint(monkeypatch, config, path, space, "it0_s0-1")   # (the first group)
  parallel = radars_loop.run(copy.deepcopy(config), path, space)

  sampled = lambda summary: [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  runs, ref_runs = sampled(parallel), sampled(sequential)
  assert [r["parallel_samples"] for r in runs] == [2] * len(ref_runs)
  assert [r["parallel_samples"] for r in ref_runs] == [1] * len(ref_runs)
  assert [r["program"] for r in runs] == ["shared"] * len(runs)
  assert [r["subspace"] for r in runs] == [r["subspace"] for r in ref_runs]
  assert [r["genotype"] for r in runs] == [r["genotype"] for r in ref_runs]
  np.testing.assert_allclose([r["reward"] for r in runs], [r["reward"] for r in ref_runs],
                             atol=1e-6)
  assert parallel["alive"] == sequential["alive"]
  assert parallel["genotype"] == sequential["genotype"]
  # every step within the budget, the group step's bytes per device included
  budget = config.memory_budget_gb * 1e9
  assert parallel["over_budget_steps"] == 0
  assert all(r["compiled_bytes"] <= budget for r in parallel["subspace_runs"])
  # the weight pool and the controller (weights, optimiser states) as the
  # sequential search left them
  state, ref_state = search_state(path), search_state(tmp_path / "sequential")
  assert state.keys() == ref_state.keys()
  for name, value in ref_state.items():
    np.testing.assert_allclose(np.asarray(state[name], np.float64),
                               np.asarray(value, np.float64), atol=2e-5, err_msg=name)


@pytest.mark.parametrize("change, message", [
    (dict(fair_pool=False), "fair_pool=True"),
    (dict(shared_programs=False), "shared_programs=True"),
    (dict(devices_per_sample=3), "does not divide the 4 devices"),
])
def test_parallel_samples_refuse_what_they_cannot_run(change, message):
  config = parallel_config(2)
  config.radars.update(change)
  with pytest.raises(UserError, match=message):
    config_check.check_config(config)


def test_parallel_samples_refuse_several_processes(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(UserError, match="one process's devices"):
    config_check.check_config(parallel_config(2))
