"""The PPO controller: exact Gumbel-top-k log-probabilities, learning on a
toy bandit, the critic's uncertainty, pruning."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import config_check
from radars_jax import controller as ctrl
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
    state, metrics = ctrl.controller_update(state, update_key, ops, logp, rewards, alive,
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
  _, spread_before_seen = ctrl.predict_reward(state, seen[:1])
  hparams = ctrl.ControllerHParams.from_config(config)
  logp = ctrl.log_prob(state.logits, alive, seen)
  state, _ = ctrl.controller_update(state, jax.random.key(1), seen, logp, rewards, alive,
                                    hparams)
  mean_seen, spread_seen = ctrl.predict_reward(state, seen[:2])
  _, spread_unseen = ctrl.predict_reward(state, unseen)
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
    state, metrics = ctrl.controller_update(state, jax.random.key(10 + i), ops, logp,
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
