"""RADARS on the agent space (task=agents, method=radars;
radars_jax.agents.radars_search): the image search's loop with A2D inside
each subspace, on a tiny Breakout-MinAtar setting whose whole space is over
the memory budget. Every update that runs is within the budget, the loop
samples, scores, prunes and ends in a final search whose agent is retrained;
killed (SIGKILL) and run again, it ends as the uninterrupted run."""
import json
import subprocess
import sys

import numpy as np
import pytest

from radars_jax import config_check
from radars_jax import main as main_lib
from radars_jax.errors import UserError
from radars_jax.nas import spaces
from test_a2d import tiny_config as tiny_a2d_config
from test_radars import ROOT, killed_at, subprocess_env, write_config_file

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
# Between the compiled bytes of one op per edge (worst case: nor_conv_3x3
# everywhere, about 5.7 MB on the CPU) and of the whole space (about 9.4 MB;
# `test_the_whole_space_is_over_the_budget` holds the test to that).
BUDGET_GB = 0.0085


def tiny_config():
  """Iterations of two samples, each a 2-update A2D search (8 environments x
  16 steps) scored on 4 episodes, pruning hard; a 1-update teacher, a
  2-update final search, a 1-update retraining."""
  config = tiny_a2d_config(teacher_updates=1, search_updates=2, retrain_updates=1,
                           subspace_updates=2, reward_episodes=4)
  config.method = "radars"
  config.space.ops = ",".join(OPS)
  config.memory_budget_gb = BUDGET_GB
  config.radars.max_iterations = 3
  config.controller.samples_per_iteration = 2
  config.controller.critic_steps = 10
  config.controller.prune_threshold = 0.24   # uniform is 0.25: the first update prunes
  return config


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("agent_radars")
  return path, main_lib.run(tiny_config(), str(path))


def test_the_whole_space_is_over_the_budget(whole_run):
  """(What the other tests assume: the calibration's worst case of 2 ops per
  choice point does not fit, that of 1 op does.)"""
  _, summary = whole_run
  calibration = {c["what"]: c["bytes"] for c in summary["compiles"]
                 if c["what"].startswith("calibration")}
  one = calibration["calibration, worst case of 1 op (bytes only)"]
  two = calibration["calibration, worst case of 2 ops (bytes only)"]
  assert one < BUDGET_GB * 1e9 < two, calibration


def test_radars_on_agents_keeps_every_update_within_the_budget(whole_run):
  path, summary = whole_run
  budget = BUDGET_GB * 1e9
  assert summary["memory_budget_bytes"] == budget and summary["over_budget_steps"] == 0
  samples = [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  # (ended as RADARS ends: the ops left alive fit the budget; the final
  # search runs on all of them)
  assert 1 <= summary["iterations"] < 3 and len(samples) == 2 * summary["iterations"]
  alive = np.asarray(summary["alive"])
  assert summary["subspace"] == [list(np.flatnonzero(row)) for row in alive]
  for run in summary["subspace_runs"]:
    assert 0 < run["compiled_bytes"] <= budget, run
  for run in samples:
    assert max(run["ops_per_choice_point"]) < len(OPS)   # a subspace, never the whole space
    # (the cost model's estimate of the update's bytes, from single-op traces)
    assert run["estimated_bytes"] == pytest.approx(run["compiled_bytes"], rel=0.25)
  assert summary["max_estimate_error"] < 0.25


def test_radars_on_agents_scores_samples_by_their_agents_return(whole_run):
  """A sample's reward is its derived agent's mean return (on the
  supernet's weights) as a fraction of the teacher's; later samples start
  from the weight pool; the controller prunes; the found agent is
  retrained with distillation and evaluated beside the teacher."""
  path, summary = whole_run
  teacher = summary["agents"]["teacher"]
  samples = [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  for run in samples:
    assert run["reward"] == run["return_fraction"]
    assert run["return_fraction"] == pytest.approx(run["mean_return"] / teacher["mean_return"])
    assert run["derived_macs"] == run["expected_macs"] > 0   # (one op per edge: one-hot)
  assert samples[0]["pool_hits"] == 0 and all(r["pool_hits"] > 0 for r in samples[1:])
  assert sum(summary["alive_ops_per_choice_point"]) < 6 * len(OPS)   # pruned
  space = spaces.space_from_config(tiny_config().space)
  for chosen, searched in zip(spaces.genotype_subspace(space, summary["genotype"]),
                              summary["subspace"], strict=True):
    assert set(chosen) <= set(searched)   # (the final search's subspace)
  found = summary["agents"]["radars"]
  assert found["distilled"] and found["episodes"] == 4 and np.isfinite(found["mean_return"])
  assert 0 < found["macs"] < teacher["macs"]
  assert summary["targets"]["macs_fraction_of_teacher"] == found["macs"] / teacher["macs"]
  assert summary["env"] == summary["dataset"] == "Breakout-MinAtar"
  assert len(summary["alphas"]) == 6
  for name in ("summary.json", "genotype.json", "history.json", "agents/teacher.json",
               "agents/radars.json", "report/index.html", "report/agents.png",
               "report/radars_rewards.png", "report/cell.png"):
    assert (path / name).exists(), name
  text = main_lib.console_summary("search", summary, path)
  assert "radars search on nb201 / Breakout-MinAtar" in text and "teacher" in text


@pytest.mark.parametrize("override, message", [
    (dict(method="rl"), "task=agents searches with method=a2d or radars"),
    (dict(memory_budget_gb=None), "method=radars needs a memory budget"),
    (dict(target=1e6), "leave hardware.target unset"),
    (dict(task="images", method="a2d"), "method=a2d searches agents: set task=agents"),
    (dict(mode="train"), "task=agents runs mode=search"),
])
def test_bad_agent_radars_configs_are_one_line(override, message):
  config = tiny_config()
  for name, value in override.items():
    if name == "target":
      config.hardware.target = value
    else:
      config[name] = value
  with pytest.raises(UserError, match=message):
    config_check.check_config(config)


def test_sigkilled_agent_radars_run_resumes_to_the_uninterrupted_result(whole_run, tmp_path):
  """`python -m radars_jax.main` killed (SIGKILL) in its final search, after
  that search's first checkpoint, and run again: it resumes there and ends
  as the uninterrupted run in this process."""
  _, whole = whole_run
  path = tmp_path / "run"
  flags = [f"--config={write_config_file(tiny_config(), tmp_path / 'config.py')}",
           f"--workdir={path}"]
  killed_at("saved=dnas/final", flags)
  assert [p.name for p in (path / "checkpoints" / "dnas" / "final").iterdir()] == ["1"]
  result = subprocess.run([sys.executable, "-m", "radars_jax.main", *flags], cwd=ROOT,
                          env=subprocess_env(), text=True, capture_output=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert f"resuming radars search at iteration {whole['iterations']}" in result.stdout
  summary = json.loads((path / "summary.json").read_text())
  assert summary["genotype"] == whole["genotype"] and summary["alive"] == whole["alive"]
  for a, b in zip(summary["alphas"], whole["alphas"], strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert ([r["reward"] for r in summary["subspace_runs"][:-1]]
          == [r["reward"] for r in whole["subspace_runs"][:-1]])
  for name in ("teacher", "radars"):
    for key in ("mean_return", "std_return", "macs", "params"):
      assert summary["agents"][name][key] == whole["agents"][name][key], (name, key)
