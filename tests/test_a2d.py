"""A2D (radars_jax.agents.a2d, .supernet, .run): the agent supernet's
expected multiply-adds against the derived agent's count, A2D's loss terms,
the config checks, and `method=a2d` end to end on a tiny Breakout-MinAtar
setting: its outputs, and a run stopped after its search or killed
(SIGKILL) inside it and started again equal to one run through."""
import importlib.util
import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import config_check
from radars_jax import main as main_lib
from radars_jax.agents import a2d
from radars_jax.agents import envs
from radars_jax.agents import networks
from radars_jax.agents import run as agents_run
from radars_jax.agents import supernet as agent_supernet
from radars_jax.errors import UserError
from radars_jax.nas import spaces
from test_radars import ROOT, killed_at, subprocess_env, write_config_file

OPS = "none,skip_connect,avg_pool_3x3,nor_conv_1x1,nor_conv_3x3,dil_conv_3x3"


def minatar_config(**agents):
  spec = importlib.util.spec_from_file_location("minatar_config", ROOT / "configs" / "minatar.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.progress_bar = False
  config.compilation_cache = False
  config.agents.update(agents)
  return config


def tiny_config(**agents):
  """Each PPO run a few updates of 8 environments x 16 steps, a 4-channel
  supernet over 3 ops, evaluations of 4 episodes, no baselines."""
  settings = dict(num_envs=8, num_steps=16, update_epochs=1, num_minibatches=1,
                  teacher_updates=2, search_updates=3, retrain_updates=2, eval_episodes=4,
                  channels=4, features=8, checkpoint_every=1, baselines=False)
  settings.update(agents)
  config = minatar_config(**settings)
  config.space.ops = "none,skip_connect,nor_conv_1x1"
  return config


@pytest.fixture(scope="module")
def breakout():
  return envs.make_env("Breakout-MinAtar")


def test_expected_macs_are_the_derived_agents_count_at_one_hot_weights(breakout):
  """E_alpha[MACs] with one-hot op weights = the multiply-adds counted in the
  derived agent's traced program, for several genotypes; at uniform weights
  the mean over the ops; its gradient the softmax's closed form."""
  space = spaces.make_space("nb201", ops=OPS)
  config = minatar_config(cells=2).agents
  net = agent_supernet.build_agent_supernet(space, space.full_subspace(), config, 3)
  macs = agent_supernet.AgentMacs.of(net, breakout.obs_shape)
  rng = np.random.default_rng(0)
  for ops in ([5, 0, 4, 1, 3, 2], [0] * 6, [4] * 6, list(rng.integers(0, 6, 6))):
    onehot = [np.eye(6)[i] for i in ops]
    genotype = spaces.derive_genotype(space, space.full_subspace(), onehot)
    derived = a2d.derived_agent(space, genotype, config, 3)
    assert float(macs.expected(onehot)) == agent_supernet.agent_macs(derived, breakout.obs_shape)
  per_op = np.asarray(macs.per_op[0], float)
  assert per_op[0] == 0 and per_op[1] == 0 and per_op[4] == 9 * per_op[3] > 0
  uniform = [np.full(6, 1 / 6)] * 6
  np.testing.assert_allclose(float(macs.expected(uniform)),
                             macs.fixed + 2 * 6 * per_op.mean(), rtol=1e-6)
  alphas = [jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(6)]
  grads = jax.grad(lambda a: macs.of_alphas(a))(alphas)
  for alpha, grad in zip(alphas, grads):
    p = np.asarray(jax.nn.softmax(alpha), float)
    np.testing.assert_allclose(grad, 2 * p * (per_op - p @ per_op), rtol=1e-4, atol=1e-2)


def test_a2d_loss_is_zero_for_the_teacher_and_adds_the_cost_of_the_alphas(breakout):
  """A student that is the teacher has no distillation loss; the FLOPs term
  is l_flops * E_alpha[MACs] / MACs_ref of the student's alphas."""
  teacher = networks.hand_designed_agent(breakout)
  params = networks.init_agent(teacher, breakout, jax.random.key(0))
  obs = jax.random.uniform(jax.random.key(1), (6, *breakout.obs_shape))
  logits, value = teacher.apply({"params": params}, obs)
  loss, metrics = a2d.a2d_loss(teacher, a2d.A2DWeights(1.0, 0.5))(params, obs, logits, value,
                                                                  params)
  np.testing.assert_allclose([loss, metrics["actor_kl"], metrics["critic_mse"]], 0.0, atol=1e-6)

  space = spaces.make_space("nb201", ops=OPS)
  net = agent_supernet.build_agent_supernet(space, space.full_subspace(),
                                            minatar_config().agents, breakout.num_actions)
  agent = agent_supernet.search_agent(net, space.full_subspace())
  student = jax.jit(agent.init)(jax.random.key(2), obs)["params"]
  chex.assert_trees_all_equal_shapes(agent_supernet.split_params(student)[1],
                                     (jnp.zeros(6),) * 6)
  macs = agent_supernet.AgentMacs.of(net, breakout.obs_shape)
  cost_only = a2d.a2d_loss(None, a2d.A2DWeights(0.0, 0.0, 0.3), macs, reference_macs=1e5)
  loss, metrics = cost_only(student, obs, *agent.apply({"params": student}, obs), None)
  expected = macs.of_alphas(agent_supernet.split_params(student)[1])
  np.testing.assert_allclose(loss, 0.3 * expected / 1e5, rtol=1e-6)
  np.testing.assert_allclose(metrics["expected_macs"], expected)
  with pytest.raises(ValueError, match="need a teacher"):
    a2d.a2d_loss(None, a2d.A2DWeights(1.0, 0.0))


def test_an_agents_output_for_an_observation_does_not_depend_on_its_batch(breakout):
  """The agent ops normalise each observation by its own statistics: its
  logits and value are the same alone, among others, or among copies of
  itself (under batch statistics, evaluation episodes started together
  scored far below training: docs/performance.md)."""
  space = spaces.make_space("nb201", ops=OPS)
  config = minatar_config().agents
  net = agent_supernet.build_agent_supernet(space, space.full_subspace(), config, 3)
  genotype = spaces.derive_genotype(space, space.full_subspace(),
                                    [np.eye(6)[i] for i in (2, 3, 4, 5, 1, 3)])
  obs = jax.random.bernoulli(jax.random.key(0), 0.2, (5, *breakout.obs_shape)).astype(jnp.float32)
  for agent in (agent_supernet.search_agent(net, space.full_subspace()),
                a2d.derived_agent(space, genotype, config, 3)):
    params = jax.jit(agent.init)(jax.random.key(1), obs)
    batches = (obs, obs[:1], jnp.repeat(obs[:1], 4, axis=0), obs[::-1][-1:])
    firsts = [jax.tree_util.tree_map(lambda y: y[:1], agent.apply(params, b)) for b in batches]
    chex.assert_trees_all_close(*firsts, rtol=1e-5, atol=1e-6)
    logits = agent.apply(params, obs)[0]
    assert float(jnp.abs(logits[1:] - logits[:1]).max()) > 0   # (the observations differ)


@pytest.mark.parametrize("override, message", [
    (dict(space="darts"), "NAS-Bench-201 cells"),
    (dict(memory_budget_gb=1.0), "takes no memory budget"),
    (dict(max_seconds=60.0), "leave search.max_seconds unset"),
    (dict(env="Pong-MinAtar"), "config.agents.env='Pong-MinAtar'"),
    (dict(env="CartPole-v1"), "image observations"),
    (dict(num_minibatches=7), "multiple of agents.num_minibatches"),
    (dict(teacher="/no/such/workdir"), "no such directory"),
])
def test_bad_a2d_configs_are_one_line(override, message):
  config = minatar_config()
  if "space" in override:
    config.space.name = override.pop("space")
    config.space.ops = None
  if "memory_budget_gb" in override:
    config.memory_budget_gb = override.pop("memory_budget_gb")
  if "max_seconds" in override:
    config.search.max_seconds = override.pop("max_seconds")
  config.agents.update(override)
  with pytest.raises(UserError, match=message):
    config_check.check_config(config)


def test_describe_tells_the_agent_space_and_its_costs():
  config = minatar_config()
  config.mode = "describe"
  out = main_lib.run(config, None)
  assert out["env"] == "Breakout-MinAtar" and out["observation_shape"] == [10, 10, 4]
  assert out["teacher_macs"] == 168_448
  assert len(out["choice_points"]) == 6 and len(out["space_ops"]) == 8
  assert out["derived_macs_min"] < out["derived_macs_max"]
  assert out["performance_options"]["supernet.depthwise_impl"]["picked"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("a2d_whole")
  return path, main_lib.run(tiny_config(), str(path))


def test_a2d_runs_end_to_end_and_writes_its_outputs(whole_run):
  path, summary = whole_run
  assert set(summary["agents"]) == {"teacher", "a2d", "a2d_plain"}
  for name, agent in summary["agents"].items():
    assert agent["episodes"] == 4 and np.isfinite(agent["mean_return"]), name
    assert agent["macs"] > 0 and agent["params"] > 0
  assert summary["agents"]["a2d"]["distilled"] and not summary["agents"]["a2d_plain"]["distilled"]
  assert summary["agents"]["a2d"]["macs"] < summary["agents"]["teacher"]["macs"]
  search = summary["searches"]["a2d_search"]
  assert search["env_steps"] == 3 * 8 * 16 and search["env_steps_per_second"] > 0
  assert len(search["alphas"]) == 6 and not np.allclose(search["alphas"], 0.0)
  assert set(summary["targets"]) >= {"return_fraction_of_teacher", "macs_fraction_of_teacher"}
  for name in ("summary.json", "genotype.json", "config.json", "metrics.jsonl",
               "report/index.html", "report/agents.png", "report/cell.png",
               "report/curves_a2d_search.png"):
    assert (path / name).exists(), name
  assert list((path / "tensorboard").iterdir())
  text = main_lib.console_summary("search", summary, path)
  assert "a2d search on nb201 / Breakout-MinAtar" in text and "a2d_plain" in text


def test_a2d_run_stopped_after_its_search_resumes_to_the_same_result(whole_run, tmp_path,
                                                                      monkeypatch):
  """A run that dies when its first retraining starts, run again (without
  the undistilled retraining): its search is not repeated and its result is
  the uninterrupted run's."""
  _, whole = whole_run

  def die(*args, **kwargs):
    raise KeyboardInterrupt("killed")

  with monkeypatch.context() as patch:
    patch.setattr(a2d, "retrain_trainer", die)
    with pytest.raises(KeyboardInterrupt):
      main_lib.run(tiny_config(), str(tmp_path))
  assert (tmp_path / "agents" / "a2d_search.json").exists()
  assert not (tmp_path / "agents" / "a2d.json").exists()
  searched = []
  real_search = agents_run.search_phase
  monkeypatch.setattr(agents_run, "search_phase",
                      lambda run, name, *a: searched.append(name) or real_search(run, name, *a))
  resumed = main_lib.run(tiny_config(undistilled=False), str(tmp_path))
  assert searched == ["a2d_search"]   # (called, and answered from its result file)
  assert resumed["genotype"] == whole["genotype"]
  np.testing.assert_array_equal(resumed["alphas"], whole["alphas"])
  assert set(resumed["agents"]) == {"teacher", "a2d"}   # (agents.undistilled off)
  for name in resumed["agents"]:
    for key in ("mean_return", "std_return", "macs", "params"):
      assert resumed["agents"][name][key] == whole["agents"][name][key], (name, key)


def test_a2d_run_sigkilled_mid_search_resumes_to_the_same_result(whole_run, tmp_path):
  """`python -m radars_jax.main` killed (SIGKILL) after the first checkpoint
  of A2D's search (tests/sigkill_runner.py), then run again: the search
  resumes from that checkpoint and the run ends as the uninterrupted one in
  this process."""
  _, whole = whole_run
  path = tmp_path / "run"
  flags = [f"--config={write_config_file(tiny_config(), tmp_path / 'config.py')}",
           f"--workdir={path}"]
  killed_at("saved=checkpoints/a2d_search", flags)
  assert (path / "agents" / "teacher.json").exists()
  assert not (path / "agents" / "a2d_search.json").exists()
  result = subprocess.run([sys.executable, "-m", "radars_jax.main", *flags], cwd=ROOT,
                          env=subprocess_env(), text=True, capture_output=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  resumed = json.loads((path / "summary.json").read_text())
  assert resumed["searches"]["a2d_search"]["resumed"]   # (fewer updates run than its 3)
  assert resumed["genotype"] == whole["genotype"]
  np.testing.assert_array_equal(resumed["alphas"], whole["alphas"])
  for name in whole["agents"]:
    for key in ("mean_return", "std_return", "macs", "params"):
      assert resumed["agents"][name][key] == whole["agents"][name][key], (name, key)


def test_the_comparison_script_aggregates_runs_over_seeds(whole_run, tmp_path):
  """experiments/a2d_minatar.py's table and plot from run summaries (two
  seeds here: the same run twice, so the spread is 0)."""
  spec = importlib.util.spec_from_file_location("a2d_minatar",
                                                ROOT / "experiments" / "a2d_minatar.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  _, summary = whole_run
  results = script.aggregate({"Breakout-MinAtar": [summary, summary]})
  rows = results["Breakout-MinAtar"]["agents"]
  assert set(rows) == {"teacher", "a2d"} and rows["a2d"]["seeds"] == 2
  assert rows["a2d"]["return_std"] == 0.0
  assert rows["a2d"]["return_mean"] == summary["agents"]["a2d"]["mean_return"]
  assert results["Breakout-MinAtar"]["teacher_env_steps_per_second"] == pytest.approx(
      summary["agents"]["teacher"]["env_steps_per_second"])
  targets = results["Breakout-MinAtar"]["targets"]
  assert targets == summary["targets"]   # (the same claims on the same numbers)
  assert "| Breakout-MinAtar | A2D |" in script.table(results)
  assert script.plot(results, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
  config = script.minatar_config()
  script.apply_override(config, "agents.search_updates=7")
  script.apply_override(config, "agents.baselines=false")
  assert config.agents.search_updates == 7 and config.agents.baselines is False
  args = script.parse_args(["--small", "--set", "agents.teacher_updates=9"])
  assert args.set == [*script.SMALL_SETTING, "agents.teacher_updates=9"]   # (--set wins)
  script.check_overrides(args.set)
  with pytest.raises(UserError, match="no field agents.bogus"):
    script.check_overrides(["agents.bogus=1"])
  command = script.run_command("Asterix-MinAtar", 2, tmp_path, args.set, progress=False)
  assert command[1:3] == ["-m", "radars_jax.main"] and "--config.seed=2" in command
  assert "--config.agents.undistilled=false" in command
