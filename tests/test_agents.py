"""Deep-RL agents (radars_jax.agents): gymnax environments in batches, the
actor-critic agents, the PPO teacher (its advantages, that it learns
CartPole, resumed training equal to uninterrupted) and A2D's distillation
terms."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax.agents import distill
from radars_jax.agents import envs
from radars_jax.agents import networks
from radars_jax.agents import ppo
from radars_jax.errors import UserError

CARTPOLE_PPO = ppo.PPOHParams(num_envs=8, num_steps=64, num_minibatches=4, lr=2.5e-3,
                              num_updates=60)


@pytest.fixture(scope="module")
def cartpole():
  return envs.make_env("CartPole-v1")


@pytest.fixture(scope="module")
def cartpole_trainer(cartpole):
  """(one trainer: its update compiles once for the file's tests)"""
  return ppo.PPO(cartpole, networks.hand_designed_agent(cartpole), CARTPOLE_PPO)


def test_an_unknown_environment_is_one_line_naming_the_known_ones():
  with pytest.raises(UserError, match="unknown environment 'Pong'.*Breakout-MinAtar"):
    envs.make_env("Pong")


@pytest.mark.parametrize("name,obs_shape,num_actions", [("Breakout-MinAtar", (10, 10, 4), 3),
                                                        ("CartPole-v1", (4,), 2)])
def test_environments_reset_and_step_in_batches(name, obs_shape, num_actions):
  env = envs.make_env(name)
  assert env.obs_shape == obs_shape and env.num_actions == num_actions
  obs, state = jax.jit(env.reset, static_argnums=1)(jax.random.key(0), 5)
  chex.assert_shape(obs, (5, *obs_shape))
  obs, state, reward, done = jax.jit(env.step)(jax.random.key(1), state,
                                               jnp.zeros(5, jnp.int32))
  chex.assert_shape([obs, reward, done], [(5, *obs_shape), (5,), (5,)])
  chex.assert_type([obs, reward, done], [jnp.float32, jnp.float32, bool])
  agent = networks.hand_designed_agent(env)
  logits, value = agent.apply({"params": networks.init_agent(agent, env, jax.random.key(2))},
                              obs)
  chex.assert_shape([logits, value], [(5, num_actions), (5,)])


def test_gae_is_the_discounted_sum_of_td_errors_cut_at_episode_ends():
  rewards = np.array([[1.0], [0.5], [2.0], [1.0]])
  values = np.array([[0.2], [0.4], [0.1], [0.3]])
  dones = np.array([[False], [True], [False], [False]])
  last_value, gamma, lam = np.array([0.7]), 0.9, 0.8
  advantages, targets = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones),
                                jnp.asarray(last_value), gamma, lam)
  next_values = np.concatenate([values[1:], last_value[None]])
  deltas = rewards + gamma * next_values * (1 - dones) - values
  expected = np.zeros_like(rewards)
  for t in range(4):   # A_t = sum_l (gamma lam)^l delta_{t+l}, up to the episode's end
    for l in range(t, 4):
      expected[t] += (gamma * lam) ** (l - t) * deltas[l]
      if dones[l, 0]:
        break
  np.testing.assert_allclose(advantages, expected, rtol=1e-6)
  np.testing.assert_allclose(targets, expected + values, rtol=1e-6)


def test_ppo_settings_are_checked():
  with pytest.raises(UserError, match="multiple of num_minibatches"):
    ppo.PPOHParams(num_envs=3, num_steps=5, num_minibatches=2)
  with pytest.raises(UserError, match="num_envs must be a positive integer"):
    ppo.PPOHParams(num_envs=0)


def test_ppo_teacher_learns_cartpole(cartpole_trainer):
  """60 updates (30,720 steps): the mean return over 64 whole episodes is
  more than 2.5 times the untrained policy's (about 23)."""
  trainer = cartpole_trainer
  untrained = trainer.evaluate(trainer.init(jax.random.key(0)).params, jax.random.key(1))
  state, history = ppo.train(trainer, jax.random.key(0), 60, progress=False)
  assert len(history) == 60 and int(state.update) == 60
  assert history[-1]["episodes"] > 0
  trained = trainer.evaluate(state.params, jax.random.key(1))
  assert untrained["episodes"] == trained["episodes"] == 64
  assert trained["mean_return"] > 2.5 * untrained["mean_return"], (untrained, trained)


def test_evaluation_returns_are_whole_episodes(cartpole, cartpole_trainer):
  """CartPole pays 1 a step: each return is a whole episode's length, at
  most the step limit."""
  trainer = cartpole_trainer
  params = trainer.init(jax.random.key(0)).params
  returns = np.asarray(trainer._evaluate(params, jax.random.key(3), num_episodes=16,   # pylint: disable=protected-access
                                         greedy=True))
  chex.assert_shape(returns, (16,))
  np.testing.assert_array_equal(returns, np.round(returns))
  assert returns.min() >= 1 and returns.max() <= cartpole.max_episode_steps
  with pytest.raises(UserError, match="num_episodes"):
    trainer.evaluate(params, jax.random.key(3), num_episodes=0)


def test_resumed_teacher_training_equals_uninterrupted(cartpole_trainer, tmp_path):
  trainer = cartpole_trainer
  whole, _ = ppo.train(trainer, jax.random.key(5), 4, progress=False)
  ppo.train(trainer, jax.random.key(5), 2, checkpoint_dir=tmp_path / "teacher", progress=False)
  resumed, history = ppo.train(trainer, jax.random.key(5), 4, checkpoint_dir=tmp_path / "teacher",
                               progress=False)
  assert len(history) == 2   # updates 3 and 4 only
  chex.assert_trees_all_equal(resumed.params, whole.params)
  chex.assert_trees_all_equal(resumed.episode_return, whole.episode_return)
  assert int(resumed.update) == 4


def test_unrolled_update_equals_the_looped_one():
  """The update's minibatch steps unrolled (the CPU's pick for image
  observations) or looped: the same parameters after an update."""
  env = envs.make_env("Breakout-MinAtar")
  hp = ppo.PPOHParams(num_envs=2, num_steps=8, update_epochs=2, num_minibatches=2)
  agent = networks.ActorCritic(networks.MinAtarTorso(channels=4, features=16), env.num_actions)
  assert ppo.PPO(env, agent, hp).unroll == (jax.default_backend() == "cpu")
  states = [ppo.PPO(env, agent, hp, unroll=unroll).update(
      ppo.PPO(env, agent, hp).init(jax.random.key(0)))[0] for unroll in (False, True)]
  chex.assert_trees_all_close(states[1].params, states[0].params, atol=1e-6, rtol=1e-5)


def test_distillation_is_zero_for_the_teacher_and_pulls_the_student_towards_it():
  """KL(pi_teacher || pi_student) and the value gap: zero where the student
  is the teacher; their gradients are the closed forms (softmax(student) -
  softmax(teacher) for the logits, 2 (V_s - V_t) / N for the values); no
  gradient reaches the teacher."""
  teacher_logits = jax.random.normal(jax.random.key(0), (5, 3))
  teacher_value = jax.random.normal(jax.random.key(1), (5,))
  loss, parts = distill.distillation_loss(teacher_logits, teacher_value, teacher_logits,
                                          teacher_value, 1.0, 0.5)
  np.testing.assert_allclose([loss, parts["actor_kl"], parts["critic_mse"]], 0.0, atol=1e-6)
  student_logits = jax.random.normal(jax.random.key(2), (5, 3))
  student_value = jax.random.normal(jax.random.key(3), (5,))
  grads = jax.grad(lambda sl, sv, tl, tv: distill.distillation_loss(sl, sv, tl, tv, 2.0, 0.5)[0],
                   argnums=(0, 1, 2, 3))(student_logits, student_value, teacher_logits,
                                          teacher_value)
  expected_logits = 2.0 * (jax.nn.softmax(student_logits) - jax.nn.softmax(teacher_logits)) / 5
  np.testing.assert_allclose(grads[0], expected_logits, atol=1e-6)
  np.testing.assert_allclose(grads[1], 0.5 * 2 * (student_value - teacher_value) / 5, atol=1e-6)
  np.testing.assert_array_equal(grads[2], 0.0)
  np.testing.assert_array_equal(grads[3], 0.0)
  kl = distill.policy_kl(teacher_logits, student_logits)
  chex.assert_shape(kl, (5,))
  assert (np.asarray(kl) > 0).all()
