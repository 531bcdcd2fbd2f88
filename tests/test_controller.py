"""The PPO controller: exact Gumbel-top-k log-probabilities, learning on a
toy bandit, the critic's uncertainty, pruning."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import config_check
from radars_jax.radars import controller as ctrl
from radars_jax.radars import critic
from radars_jax.radars import ppo
from radars_jax.errors import UserError


def _logits():
  return jnp.array([[0.3, -1.0, 1.2, 0.0, 0.5],
                    [2.0, 0.1, -0.4, 0.9, 0.0]], jnp.float32)


def test_log_probs_of_ordered_draws_sum_to_one_and_match_enumeration():
  logits = _logits()
  alive = jnp.array([[True, True, True, False, True],
                     [True, True, True, True, True]])
  k = 2
  total = 0.0
  for c in range(2):
    ops_alive = [o for o in range(5) if bool(alive[c, o])]
    point_total = 0.0
    for draw in itertools.permutations(ops_alive, k):
      ops = jnp.full((2, k), -1, jnp.int32).at[c].set(jnp.array(draw))
      logp = float(ctrl.log_prob_per_point(logits, alive, ops)[c])
      # Plackett-Luce by hand: p(a) p(b | a removed).
      p = jax.nn.softmax(jnp.where(alive[c], logits[c], -jnp.inf))
      expected = p[draw[0]] * p[draw[1]] / (1.0 - p[draw[0]])
      np.testing.assert_allclose(np.exp(logp), float(expected), rtol=1e-5)
      point_total += np.exp(logp)
    np.testing.assert_allclose(point_total, 1.0, rtol=1e-5)
    total += point_total
  assert total == pytest.approx(2.0, rel=1e-5)


def test_gumbel_top_k_frequencies_match_exact_probabilities():
  logits = _logits()[:1, :4]
  alive = jnp.ones((1, 4), bool)
  n = 40000
  ops, logp = ctrl.sample_subspaces(jax.random.key(0), logits, alive, 2, n)
  chex.assert_shape(ops, (n, 1, 2))
  chex.assert_shape(logp, (n,))
  ops = np.asarray(ops)[:, 0]
  assert np.all(ops[:, 0] != ops[:, 1])
  for draw in itertools.permutations(range(4), 2):
    freq = np.mean((ops[:, 0] == draw[0]) & (ops[:, 1] == draw[1]))
    exact = float(np.exp(ctrl.log_prob(logits, alive, jnp.array([draw]))))
    assert abs(freq - exact) < 4 * np.sqrt(exact * (1 - exact) / n) + 1e-3, (draw, freq, exact)
  # The log-probability returned with each sample is the exact one.
  idx = np.arange(50)
  np.testing.assert_allclose(
      np.asarray(logp)[idx],
      np.asarray(ctrl.log_prob(logits, alive, jnp.asarray(ops[idx])[:, None])), rtol=1e-5)


def test_dead_ops_are_never_sampled_and_short_points_pad_with_minus_one():
  logits = jnp.zeros((2, 4))
  alive = jnp.array([[True, False, True, True], [False, False, True, False]])
  ops, logp = ctrl.sample_subspaces(jax.random.key(3), logits, alive, 2, 500)
  ops = np.asarray(ops)
  assert not np.any(ops[:, 0] == 1)
  assert np.all(ops[:, 1, 0] == 2) and np.all(ops[:, 1, 1] == -1)
  # Choice point 1 is forced: only choice point 0 contributes: log(1/3 * 1/2).
  np.testing.assert_allclose(np.asarray(logp), np.log(1 / 6), rtol=1e-5)
  with pytest.raises(UserError):
    ctrl.sample_subspaces(jax.random.key(0), logits, alive, 5, 1)


def _bandit_reward(ops, good):
  ops = np.asarray(ops)
  return np.array([sum(good[c, o] for c in range(good.shape[0]) for o in ops[i, c] if o >= 0)
                   for i in range(ops.shape[0])], np.float32)


def test_ppo_learns_the_best_subspace_of_a_toy_bandit():
  good = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 1, 0, 1, 0]], np.float32)
  config = ctrl.default_controller_config()
  config.samples_per_iteration = 8
  config.critic_steps = 30
  hparams = ctrl.ControllerHParams.from_config(config)
  state = ctrl.init_controller(jax.random.key(0), 3, 5, config)
  alive = jnp.ones((3, 5), bool)
  key = jax.random.key(1)
  first = None
  for _ in range(25):
    key, sample_key, update_key = jax.random.split(key, 3)
    ops, logp = ctrl.sample_subspaces(sample_key, state.logits, alive, 2, 8,
                                      per_choice_point=True)
    rewards = _bandit_reward(ops, good)
    first = rewards.mean() if first is None else first
    state, metrics = ppo.controller_update(state, update_key, ops, logp, rewards, alive,
                                            hparams)
  best = np.sort(np.asarray(ctrl.most_likely_subspace(state.logits, alive, 2)), axis=-1)
  np.testing.assert_array_equal(best, [[0, 1], [3, 4], [1, 3]])
  assert float(metrics["reward_mean"]) > first
  assert float(metrics["entropy"]) < np.log(5)


def test_critic_spread_shrinks_where_it_has_data():
  config = ctrl.default_controller_config()
  config.critic_steps = 300
  state = ctrl.init_controller(jax.random.key(0), 2, 4, config)
  alive = jnp.ones((2, 4), bool)
  # Data on two subspaces only; op 3 never appears in them.
  seen = jnp.array([[[0, 1], [0, 1]], [[0, 2], [0, 1]]] * 8, jnp.int32)
  rewards = jnp.array([1.0, 0.5] * 8)
  unseen = jnp.array([[[2, 3], [2, 3]]], jnp.int32)
  _, spread_before_seen = critic.predict_reward(state, seen[:1])
  hparams = ctrl.ControllerHParams.from_config(config)
  logp = ctrl.log_prob(state.logits, alive, seen)
  state, _ = ppo.controller_update(state, jax.random.key(1), seen, logp, rewards, alive,
                                    hparams)
  mean_seen, spread_seen = critic.predict_reward(state, seen[:2])
  _, spread_unseen = critic.predict_reward(state, unseen)
  np.testing.assert_allclose(np.asarray(mean_seen), [1.0, 0.5], atol=0.1)
  assert float(spread_seen.max()) < float(spread_unseen[0]) / 3
  assert float(spread_seen.max()) < float(spread_before_seen[0])


def test_replay_update_runs_with_off_policy_samples_and_reports_ratios():
  config = ctrl.default_controller_config()
  config.replay_batch = 8
  hparams = ctrl.ControllerHParams.from_config(config)
  state = ctrl.init_controller(jax.random.key(0), 2, 3, config)
  alive = jnp.ones((2, 3), bool)
  for i in range(3):
    # Behaviour policy: sampled at temperature 3 (not the state's policy).
    ops, logp = ctrl.sample_subspaces(jax.random.key(i), state.logits, alive, 1, 4, 3.0,
                                      per_choice_point=True)
    state, metrics = ppo.controller_update(state, jax.random.key(10 + i), ops, logp,
                                            jnp.arange(4.0), alive, hparams)
  assert int(jnp.sum(state.buffer.valid)) == 12
  assert float(metrics["replay_valid"]) == 8
  assert 0.0 < float(metrics["replay_ratio_mean"]) < 10.0
  chex.assert_tree_all_finite(state.logits)


def test_pruning_never_empties_a_choice_point():
  rng = np.random.default_rng(0)
  for _ in range(50):
    alive = rng.random((6, 5)) < 0.6
    probs = rng.random((6, 5)) * alive
    probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-9)
    new = np.asarray(ctrl.prune(alive, probs, threshold=0.99))
    assert not np.any(new & ~alive)          # dead ops stay dead
    has_alive = alive.any(-1)
    np.testing.assert_array_equal(new.sum(-1)[has_alive], 1)   # the best one stays
    best = np.argmax(np.where(alive, probs, -1), -1)
    assert np.all(new[has_alive, best[has_alive]])
  alive = np.ones((1, 4), bool)
  np.testing.assert_array_equal(
      ctrl.prune(alive, np.array([[0.5, 0.3, 0.15, 0.05]]), 0.1), [[True, True, True, False]])


def test_bad_controller_config_is_a_user_error():
  config = ctrl.default_controller_config()
  config.uncertainty = "magic"
  with pytest.raises(UserError, match="uncertainty"):
    config_check.check_fields(config, prefix="controller.")


# ---------------------------------------------------------------------------
# The uncertainty modes and the importance cap, on numbers: a critic whose
# predictions are known (each member linear in the multi-hot encoding, set
# by hand), rewards and log-probabilities chosen here.
# ---------------------------------------------------------------------------

C, M = 2, 3                      # choice points, ops
KERNELS = np.array([[0.3, -0.2, 0.1, 0.5, 0.0, -0.4],
                    [0.1, 0.4, -0.3, 0.2, 0.6, 0.0],
                    [-0.2, 0.0, 0.5, 0.1, -0.1, 0.3]])   # [members, C * M]
BIASES = np.array([0.05, -0.1, 0.2])
REWARD_MEAN, REWARD_STD = 0.5, 2.0
OPS = np.array([[[0], [1]], [[2], [1]], [[1], [0]], [[0], [2]]], np.int32)   # [N, C, k=1]
REWARDS = np.array([1.5, -0.5, 0.8, 2.0], np.float32)
VALID = np.array([True, True, True, False])


def _known_critic_state(config):
  """A controller whose critic members are the linear maps KERNELS, BIASES
  (on standardised rewards, REWARD_MEAN and REWARD_STD)."""
  state = ctrl.init_controller(jax.random.key(0), C, M, config)
  params = {"params": {"Dense_0": {"kernel": jnp.asarray(KERNELS[:, :, None], jnp.float32),
                                   "bias": jnp.asarray(BIASES[:, None], jnp.float32)}}}
  chex.assert_trees_all_equal_shapes_and_dtypes(params, state.critic_params)
  return state.replace(critic_params=params, reward_mean=jnp.float32(REWARD_MEAN),
                       reward_std=jnp.float32(REWARD_STD))


def _linear_config(**overrides):
  config = ctrl.default_controller_config()
  config.critic_hidden = ()          # each member: one Dense layer
  config.critic_members = 3
  config.critic_steps = 1
  config.ppo_epochs = 1
  config.baseline = "subspace"       # the critic's mean at the sample
  config.update(overrides)
  return config


def _expected_advantages(mode, scale, ready):
  """`ppo`'s module docstring's rules, in numpy: critic mean and spread (std
  over members) at each sample, confidence = 1 / (1 + spread / (scale *
  reward_std)), then per mode."""
  members = _critic_at(OPS)                                           # [N, members]
  batch_mean = REWARDS[VALID].astype(np.float64).mean()
  if ready:
    mean, spread = members.mean(1), members.std(1)
  else:   # before the critic has seen data: batch mean, confidence 1
    mean, spread = np.full(len(OPS), batch_mean), np.zeros(len(OPS))
  confidence = 1.0 / (1.0 + spread / (scale * REWARD_STD))
  advantage = REWARDS - mean
  if mode == "scale_advantage":
    advantage = advantage * confidence
  elif mode == "exploration_bonus":
    advantage = advantage + scale * spread
  elif mode == "trust_critic":
    advantage = REWARDS - (confidence * mean + (1 - confidence) * batch_mean)
  advantage = np.where(VALID, advantage, 0.0)
  return advantage, mean, spread, confidence


@pytest.mark.parametrize("ready", [True, False])
@pytest.mark.parametrize("mode", ctrl.UNCERTAINTY_MODES)
def test_uncertainty_modes_give_the_documented_advantages(mode, ready):
  config = _linear_config(uncertainty=mode, uncertainty_scale=0.7)
  hparams = ctrl.ControllerHParams.from_config(config)
  state = _known_critic_state(config)
  advantages, _, spread, confidence = ppo.raw_advantages(
      state, jnp.asarray(OPS), jnp.asarray(REWARDS), jnp.asarray(VALID), None, None, hparams,
      jnp.asarray(ready))
  expected, _, expected_spread, expected_confidence = _expected_advantages(mode, 0.7, ready)
  chex.assert_shape(advantages, (len(OPS), C))
  for c in range(C):   # (the subspace baseline: the same for every choice point)
    np.testing.assert_allclose(np.asarray(advantages[:, c]), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(spread), expected_spread, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(confidence), expected_confidence, rtol=1e-5)
  if ready:   # the spread matters here: every mode gives its own numbers
    others = [_expected_advantages(m, 0.7, True)[0] for m in ctrl.UNCERTAINTY_MODES if m != mode]
    assert all(np.abs(expected - other).max() > 0.05 for other in others)


def _critic_at(ops):
  """The known critic's members at subspaces ops [N, C, 1], in reward
  units: [N, members]."""
  x = np.zeros((len(ops), C * M))
  for i, sample in enumerate(ops):
    for c in range(C):
      x[i, c * M + sample[c, 0]] = 1.0
  return (x @ KERNELS.T + BIASES) * REWARD_STD + REWARD_MEAN


def test_controller_update_applies_the_mode_and_caps_the_importance_ratio():
  """Through `controller_update` (one compile): the batch's advantages are
  the exploration-bonus rule's (metrics, before normalisation), and the
  replay term weights its sample by the importance ratio capped at
  `importance_clip`: replay loss = -mean_c min(pi_new / pi_b, cap)_c * A *
  log pi_new_c, A = reward - critic mean + bonus at the replayed subspace
  (the buffer's only entry, drawn `replay_batch` times)."""
  scale, cap = 0.7, 1.0
  config = _linear_config(uncertainty="exploration_bonus", uncertainty_scale=scale,
                          importance_clip=cap, replay_batch=4, replay_weight=1.0,
                          normalize_advantages=False)
  hparams = ctrl.ControllerHParams.from_config(config)
  logits = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]], np.float32)
  replay_ops = np.array([[[0], [2]]], np.int32)
  new_logp = np.asarray(jax.nn.log_softmax(logits, -1))[[0, 1], [0, 2]]   # [C]
  # Behaviour log-probabilities: ratio e^1.5 ~ 4.5 at choice point 0 (over
  # the cap), e^-0.7 ~ 0.5 at choice point 1 (under it).
  behaviour = (new_logp - np.array([1.5, -0.7])).astype(np.float32)
  replay_reward = 3.0
  state = _known_critic_state(config)
  capacity = state.buffer.rewards.shape[0]
  padded = -np.ones((capacity, C, M), np.int32)
  padded[0, :, :1] = replay_ops[0]
  buffer = state.buffer.replace(
      ops=jnp.asarray(padded),
      behaviour_logp=jnp.asarray(np.zeros((capacity, C), np.float32)).at[0].set(behaviour),
      rewards=jnp.asarray(np.zeros(capacity, np.float32)).at[0].set(replay_reward),
      valid=jnp.asarray(np.arange(capacity) == 0))
  state = state.replace(logits=jnp.asarray(logits), buffer=buffer)
  alive = np.ones((C, M), bool)
  batch_logp = np.asarray(ctrl.log_prob_per_point(state.logits, alive, OPS))
  _, metrics = ppo.controller_update(state, jax.random.key(1), OPS, batch_logp, REWARDS,
                                      alive, hparams, valid=VALID)
  advantage, mean, spread, confidence = _expected_advantages("exploration_bonus", scale, True)
  np.testing.assert_allclose(float(metrics["advantage_mean"]), advantage[VALID].mean(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(metrics["critic_mean"]), mean[VALID].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["critic_spread"]), spread[VALID].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["confidence"]), confidence[VALID].mean(), rtol=1e-5)
  assert float(metrics["valid_samples"]) == VALID.sum()
  members = _critic_at(replay_ops)[0]
  replay_advantage = replay_reward - members.mean() + scale * members.std()
  ratio = np.exp(new_logp - behaviour)
  np.testing.assert_allclose(
      float(metrics["replay_loss"]),
      -np.mean(np.minimum(ratio, cap) * replay_advantage * new_logp), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["replay_ratio_mean"]), ratio.mean(), rtol=1e-5)
  assert float(metrics["replay_clip_fraction"]) == 0.5   # point 0 capped, point 1 not
  assert float(metrics["replay_valid"]) == 4


def test_controller_update_compiles_once_across_iterations():
  """RADARS compiles the update ahead in its compile thread
  (`ppo.compile_update`, on abstract shapes); the
  iterations' calls (the state each returned, other samples, a NaN reward)
  reuse that program: one XLA compile of the update in all, and one trace
  (chex.assert_max_traces on the traced function)."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  config = _linear_config(samples_per_iteration=4, replay_batch=4, critic_steps=2)
  hparams = ctrl.ControllerHParams.from_config(config)
  compiles = []

  def on_event(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(kwargs.get("fun_name", ""))

  chex.clear_trace_counter()   # (counts are kept per traced function, across tests)
  traced_once = jax.jit(chex.assert_max_traces(ppo.controller_step.__wrapped__, n=1),
                        static_argnames=("hparams",))
  state = ctrl.init_controller(jax.random.key(0), C, M, config)
  alive = np.ones((C, M), bool)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(ppo, "controller_step", traced_once)
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
      with concurrent.futures.ThreadPoolExecutor(1) as thread:   # as the loop's compile queue
        thread.submit(ppo.compile_update, state, 4, 1, hparams).result()
      for i in range(3):
        ops, logp = ctrl.sample_subspaces(jax.random.key(10 + i), state.logits, alive, 1, 4,
                                          per_choice_point=True)
        rewards = np.array([1.0, np.nan if i == 1 else 0.5, 2.0, 0.0], np.float32)
        state, _ = ppo.controller_update(state, jax.random.key(i), np.asarray(ops, np.int32),
                                          np.asarray(logp, np.float32), rewards, alive, hparams)
    finally:
      jax.monitoring.unregister_event_duration_listener(on_event)
  assert int(state.step) == 3
  assert [name for name in compiles if "controller_step" in name] == [
      "jit(controller_step)"], compiles
