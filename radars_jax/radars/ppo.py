"""The controller's update: PPO on the policy, replay, critic refit.

`controller_update` is the entry point; `controller_step` here is
the one jitted program it runs. It is compiled once: shapes are static and
the hyperparameters are a hashable `ControllerHParams` passed as a static
argument.

Policy update: PPO clipped surrogate over the iteration's batch for
`ppo_epochs` full-batch Adam steps, minus an entropy bonus (mean over choice
points of the alive-op categorical entropy), plus `replay_weight` times an
off-policy term over `replay_batch` samples drawn uniformly from the replay
buffer (earlier iterations): its per-sample weight is the importance ratio
pi_new / pi_behaviour truncated at `importance_clip` (V-trace / ACER style,
gradient min(rho, c) * A * grad log pi). Advantages are normalised (zero
mean, unit std) within the batch and within the replay sample. Then the
batch is written into the ring buffer and the critic is refit on the buffer
for `critic_steps` Adam steps.

Baselines (`config.baseline`): 'counterfactual' (default) gives every
choice point the critic's expected reward had that choice point drawn
afresh from the policy (COMA-style); 'subspace' the critic's mean at the
sample; 'batch_mean' the batch's mean reward.

How the critic's uncertainty is used (`config.uncertainty`):
  * 'scale_advantage' (default): advantage_i *= confidence_i with
    confidence_i = 1 / (1 + spread_i / (uncertainty_scale * reward_std)):
    where the critic is unsure its baseline is unreliable, so the sample
    moves the policy less.
  * 'exploration_bonus': advantage_i += uncertainty_scale * spread_i: a
    UCB-like bonus for subspaces the critic knows little about.
  * 'trust_critic' (FNAS transfer): baseline_i = confidence_i * critic_i +
    (1 - confidence_i) * batch mean reward: a critic carried over from an
    earlier search (`radars_jax.radars.knowledge`,
    `controller.transfer_from`) is trusted only where it is sure.
  * 'none': critic mean is the baseline, spread unused.
Until the critic has seen any data (first update) the baseline is the batch
mean reward and confidence is 1.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from radars_jax.radars.controller import (
    ControllerHParams, ControllerState, feasible, importance_weights, log_prob_per_point,
    masked_log_softmax, policy_entropy, policy_optimizer, sample_subspaces)
from radars_jax.radars.critic import critic_fit, member_predictions, multi_hot
from radars_jax.radars.replay_buffer import pad_ops


class _Batch(NamedTuple):
  """One iteration's samples as the update uses them: ops int [N, C, M]
  (padded with -1), behaviour log-probabilities float [N, C], rewards [N]
  (0 where not valid) and valid [N] (scored and feasible)."""
  ops: jax.Array
  behaviour_logp: jax.Array
  rewards: jax.Array
  valid: jax.Array


class _Advantages(NamedTuple):
  """The batch's advantages [N, C] (normalised), the critic's view of its
  samples (mean, spread, confidence [N]), the mean advantage before
  normalisation and the reward scale the normalisation floors its std at."""
  advantages: jax.Array
  critic_mean: jax.Array
  spread: jax.Array
  confidence: jax.Array
  raw_mean: jax.Array
  reward_scale: jax.Array


class _ReplaySample(NamedTuple):
  """A sample of the replay buffer (earlier iterations): ops [R, C, M], the
  log-probabilities of the policy that drew them [R, C], valid [R] and
  normalised advantages [R, C]."""
  ops: jax.Array
  behaviour_logp: jax.Array
  valid: jax.Array
  advantages: jax.Array


# ---------------------------------------------------------------------------
# The jitted update
# ---------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("hparams",))
def controller_step(state: ControllerState, key: jax.Array, ops: jax.Array,
                    behaviour_logp: jax.Array, rewards: jax.Array, alive: jax.Array,
                    valid: jax.Array, hparams: ControllerHParams):
  """`controller_update` as one jitted program (the helpers below
  are traced into it): advantages, replay sample, PPO steps, critic refit."""
  hp = hparams
  k = ops.shape[-1]
  batch = _prepare_batch(state, ops, behaviour_logp, rewards, alive, valid)
  critic_ready = jnp.any(state.buffer.valid)
  replay_key, critic_key, alt_key = jax.random.split(key, 3)
  alt_rows, alt_weights = _alternative_rows(alt_key, state.logits, alive, k, hp.baseline_samples)
  # Advantages of the batch, from the critic as it was before this batch.
  adv = _batch_advantages(state, batch, alt_rows, alt_weights, hp, critic_ready)
  replay = None
  if hp.replay_batch > 0 and hp.replay_weight > 0:
    replay = _replay_sample(state, replay_key, alive, alt_rows, alt_weights, hp, critic_ready,
                            adv.reward_scale)
  logits, policy_opt_state, losses, first_aux, last_aux = _ppo_steps(
      state, alive, batch, adv.advantages, replay, hp)
  new_state, critic_loss = _refit_critic(state, critic_key, batch, hp)
  new_state = new_state.replace(logits=logits, policy_opt_state=policy_opt_state,
                                step=state.step + 1)
  metrics = _update_metrics(batch, adv, losses, first_aux, last_aux, critic_loss,
                            replay is not None)
  return new_state, metrics


def _prepare_batch(state: ControllerState, ops, behaviour_logp, rewards, alive,
                   valid) -> _Batch:
  """The batch padded to the policy's width, in float32, its invalid rows
  (unscored, NaN, or no longer feasible) masked, and per-choice-point
  behaviour log-probabilities."""
  num_choice_points, max_ops = state.logits.shape
  ops = pad_ops(ops, max_ops)
  rewards = rewards.astype(jnp.float32)
  behaviour_logp = behaviour_logp.astype(jnp.float32)
  if behaviour_logp.ndim == 1:
    # Only the joint log-probability is known: split it over choice points
    # as the state's own policy does (exact when the batch was drawn from
    # it at temperature 1, and the joint ratio stays exact in any case).
    own = log_prob_per_point(state.logits, alive, ops)
    behaviour_logp = own + (behaviour_logp - jnp.sum(own, -1))[:, None] / num_choice_points
  valid = valid & jnp.isfinite(rewards) & feasible(ops, alive)
  rewards = jnp.where(valid, rewards, 0.0)
  return _Batch(ops, behaviour_logp, rewards, valid)


# ---------------------------------------------------------------------------
# Advantages: baselines, uncertainty, normalisation
# ---------------------------------------------------------------------------

def _alternative_rows(key, logits, alive, k: int, num_samples: int):
  """What a choice point could have drawn instead, for the counterfactual
  baseline: rows [A, C, M] (multi-hot of one choice point's draw) and
  weights [A, C] summing to 1 over A. k = 1: every alive op, weighted by
  its probability (exact). k > 1: `num_samples` Plackett-Luce draws."""
  max_ops = logits.shape[-1]
  if k == 1:
    probs = jnp.exp(masked_log_softmax(logits, alive))              # [C, M]
    probs = jnp.where(alive, probs, 0.0)
    rows = jnp.broadcast_to(jnp.eye(max_ops)[:, None, :], (max_ops,) + logits.shape)
    return rows, probs.T
  ops, _ = sample_subspaces(key, logits, alive, k, num_samples)        # [A, C, k]
  rows = jnp.sum(jax.nn.one_hot(ops, max_ops, dtype=jnp.float32), axis=-2)
  return rows, jnp.full(ops.shape[:2], 1.0 / num_samples)


def _counterfactual_baselines(state, x, rows, weights):
  """b[members, N, C] = sum_a weights[a, c] * Q(x_i with choice point c's row
  replaced by rows[a, c]): the critic's expected reward of sample i had
  choice point c drawn afresh from the policy (COMA-style). It does not
  depend on what c drew, so it is an unbiased baseline for c's decision."""
  n = x.shape[0]
  num_choice_points, max_ops = rows.shape[1:]
  x = x.reshape(n, 1, 1, num_choice_points, max_ops)
  is_point = jnp.eye(num_choice_points, dtype=bool)[None, :, None, :, None]   # [1,C,1,C,1]
  alt = jnp.swapaxes(rows, 0, 1)[None, :, :, None, :]                        # [1,C,A,1,M]
  inputs = jnp.where(is_point, alt, x)                                       # [N,C,A,C,M]
  inputs = inputs.reshape(n, num_choice_points, rows.shape[0], num_choice_points * max_ops)
  preds = member_predictions(state, inputs)                                  # [m,N,C,A]
  return jnp.einsum("mnca,ac->mnc", preds, weights)


def _normalise(x, valid, enabled: bool, reward_scale):
  """Zero mean, unit std over the entries where `valid` (broadcast to x).
  The std is floored at 1% of the reward scale, so that advantages that are
  all ~0 (every sample as good as expected) stay ~0 instead of being blown
  up into noise."""
  if not enabled:
    return x
  w = jnp.broadcast_to(valid, x.shape).astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(w * x) / n
  std = jnp.sqrt(jnp.sum(w * (x - mean) ** 2) / n)
  std = jnp.maximum(std, 0.01 * reward_scale) + 1e-8
  return jnp.where(w > 0, (x - mean) / std, 0.0)


def _masked_mean(x, valid):
  """Mean of x over the entries where `valid` (broadcast to x); 0 if none."""
  w = jnp.broadcast_to(valid, x.shape).astype(jnp.float32)
  return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1.0)


def raw_advantages(state: ControllerState, ops, rewards, valid, alt_rows, alt_weights,
               hp: ControllerHParams, critic_ready):
  """Per-sample, per-choice-point advantages [N, C] (before normalisation)
  for subspaces ops [N, C, M], with the critic's mean [N], spread [N] and
  confidence [N] at the sampled subspaces: the module docstring's baseline
  and uncertainty rules."""
  num_choice_points, max_ops = state.logits.shape
  batch_mean = _masked_mean(rewards, valid)
  x = multi_hot(ops, max_ops)
  member_q = member_predictions(state, x)                                  # [m, N]
  critic_mean = jnp.where(critic_ready, jnp.mean(member_q, 0), batch_mean)
  spread = jnp.where(critic_ready, jnp.std(member_q, 0), 0.0)
  confidence = 1.0 / (1.0 + spread / (hp.uncertainty_scale * state.reward_std + 1e-8))
  if hp.baseline == "counterfactual":
    critic_baseline = jnp.mean(_counterfactual_baselines(state, x, alt_rows, alt_weights), 0)
  elif hp.baseline == "subspace":
    critic_baseline = jnp.broadcast_to(critic_mean[:, None], (ops.shape[0], num_choice_points))
  else:  # batch_mean
    critic_baseline = jnp.full((ops.shape[0], num_choice_points), batch_mean)
  critic_baseline = jnp.where(critic_ready, critic_baseline, batch_mean)
  if hp.uncertainty == "trust_critic":
    baseline = (confidence[:, None] * critic_baseline
                + (1.0 - confidence[:, None]) * batch_mean)
  else:
    baseline = critic_baseline
  advantages = rewards[:, None] - baseline
  if hp.uncertainty == "scale_advantage":
    advantages = advantages * confidence[:, None]
  elif hp.uncertainty == "exploration_bonus":
    advantages = advantages + hp.uncertainty_scale * spread[:, None]
  return jnp.where(valid[:, None], advantages, 0.0), critic_mean, spread, confidence


def _batch_advantages(state: ControllerState, batch: _Batch, alt_rows, alt_weights,
                      hp: ControllerHParams, critic_ready) -> _Advantages:
  """The batch's advantages, normalised against the critic's reward scale
  (the batch's own reward std before the critic has seen any data)."""
  valid = batch.valid
  advantages, critic_mean, spread, confidence = raw_advantages(
      state, batch.ops, batch.rewards, valid, alt_rows, alt_weights, hp, critic_ready)
  raw_mean = _masked_mean(advantages, valid[:, None])
  rewards = batch.rewards
  batch_std = jnp.sqrt(_masked_mean((rewards - _masked_mean(rewards, valid)) ** 2, valid))
  reward_scale = jnp.where(critic_ready, state.reward_std, batch_std)
  advantages = _normalise(advantages, valid[:, None], hp.normalize_advantages, reward_scale)
  return _Advantages(advantages, critic_mean, spread, confidence, raw_mean, reward_scale)


def _replay_sample(state: ControllerState, key, alive, alt_rows, alt_weights,
                   hp: ControllerHParams, critic_ready, reward_scale) -> _ReplaySample:
  """`hp.replay_batch` entries of the buffer, uniform over the valid ones
  still feasible, with their advantages under the critic before this batch."""
  buffer = state.buffer
  replay_ok = buffer.valid & feasible(buffer.ops, alive)
  choice_logits = jnp.where(replay_ok, 0.0, -jnp.inf)
  choice_logits = jnp.where(jnp.any(replay_ok), choice_logits, 0.0)
  idx = jax.random.categorical(key, choice_logits, shape=(hp.replay_batch,))
  r_ops, r_blogp, r_valid = buffer.ops[idx], buffer.behaviour_logp[idx], replay_ok[idx]
  r_adv, _, _, _ = raw_advantages(state, r_ops, buffer.rewards[idx], r_valid,
                                  alt_rows, alt_weights, hp, critic_ready)
  r_adv = _normalise(r_adv, r_valid[:, None], hp.normalize_advantages, reward_scale)
  return _ReplaySample(r_ops, r_blogp, r_valid, r_adv)


# ---------------------------------------------------------------------------
# The PPO steps on the logits
# ---------------------------------------------------------------------------

def _policy_loss(logits, alive, batch: _Batch, advantages, replay: _ReplaySample | None,
                 hp: ControllerHParams):
  """(loss, aux): the PPO clipped surrogate minus the entropy bonus, plus
  the replay term when there is a replay sample."""
  valid, behaviour_logp = batch.valid, batch.behaviour_logp
  new_logp = log_prob_per_point(logits, alive, batch.ops)                  # [N, C]
  ratio = jnp.exp(new_logp - behaviour_logp)
  clipped = jnp.clip(ratio, 1.0 - hp.clip_eps, 1.0 + hp.clip_eps)
  surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
  policy_loss = -_masked_mean(surrogate, valid[:, None])
  entropy = policy_entropy(logits, alive)
  loss = policy_loss - hp.entropy_coef * entropy
  aux = dict(
      policy_loss=policy_loss, entropy=entropy,
      clip_fraction=_masked_mean((jnp.abs(ratio - 1.0) > hp.clip_eps).astype(jnp.float32),
                                 valid[:, None]),
      approx_kl=_masked_mean(jnp.sum(behaviour_logp - new_logp, -1), valid))
  if replay is not None:
    replay_loss, rho_raw = _replay_loss(logits, alive, replay, hp)
    loss = loss + hp.replay_weight * replay_loss
    aux.update(
        replay_loss=replay_loss,
        replay_ratio_mean=_masked_mean(rho_raw, replay.valid[:, None]),
        replay_clip_fraction=_masked_mean(
            (rho_raw > hp.importance_clip).astype(jnp.float32), replay.valid[:, None]),
        replay_valid=jnp.sum(replay.valid.astype(jnp.float32)))
  return loss, aux


def _replay_loss(logits, alive, replay: _ReplaySample, hp: ControllerHParams):
  """(loss, raw ratios rho [R, C]) of the off-policy term: -min(rho, c) * A *
  log pi over the replay sample, rho = pi_new / pi_behaviour (no gradient
  through rho)."""
  r_logp = log_prob_per_point(logits, alive, replay.ops)
  rho_raw = jnp.exp(r_logp - replay.behaviour_logp)
  rho = jax.lax.stop_gradient(importance_weights(r_logp, replay.behaviour_logp,
                                                 hp.importance_clip))
  replay_loss = -_masked_mean(rho * replay.advantages * r_logp, replay.valid[:, None])
  return replay_loss, rho_raw


def _ppo_steps(state: ControllerState, alive, batch: _Batch, advantages,
               replay: _ReplaySample | None, hp: ControllerHParams):
  """`hp.ppo_epochs` full-batch Adam steps on the logits (dead ops' gradients
  zeroed), in one lax.scan: (logits, optimiser state, the losses, the first
  and the last step's aux)."""
  optimizer = policy_optimizer(hp.lr, hp.max_grad_norm)

  def ppo_step(carry, _):
    logits, opt_state = carry
    (loss, aux), grads = jax.value_and_grad(_policy_loss, has_aux=True)(
        logits, alive, batch, advantages, replay, hp)
    grads = jnp.where(alive, grads, 0.0)
    updates, opt_state = optimizer.update(grads, opt_state, logits)
    return (optax.apply_updates(logits, updates), opt_state), (loss, aux)

  (logits, policy_opt_state), (losses, auxes) = jax.lax.scan(
      ppo_step, (state.logits, state.policy_opt_state), None, length=hp.ppo_epochs)
  first_aux = jax.tree_util.tree_map(lambda a: a[0], auxes)
  last_aux = jax.tree_util.tree_map(lambda a: a[-1], auxes)
  return logits, policy_opt_state, losses, first_aux, last_aux


# ---------------------------------------------------------------------------
# After the PPO steps: the critic refit, the metrics
# ---------------------------------------------------------------------------

def _refit_critic(state: ControllerState, key, batch: _Batch,
                  hp: ControllerHParams) -> tuple[ControllerState, jax.Array]:
  """Stores the batch in the replay buffer, then refits the critic on the
  buffer's standardised rewards: (`state` with the new buffer, critic and
  standardisation, the critic's loss)."""
  buffer = state.buffer.add(batch.ops, batch.behaviour_logp, batch.rewards, batch.valid)
  reward_mean = _masked_mean(buffer.rewards, buffer.valid)
  reward_std = jnp.maximum(
      jnp.sqrt(_masked_mean((buffer.rewards - reward_mean) ** 2, buffer.valid)), 1e-6)
  targets = jnp.where(buffer.valid, (buffer.rewards - reward_mean) / reward_std, 0.0)
  critic_params, critic_opt_state, critic_loss = critic_fit(
      state.critic_params, state.critic_opt_state, key,
      multi_hot(buffer.ops, state.logits.shape[-1]), targets, buffer.valid,
      state.critic_hidden, hp.critic_lr, hp.critic_steps, hp.critic_bootstrap)
  new_state = state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state,
                            buffer=buffer, reward_mean=reward_mean, reward_std=reward_std)
  return new_state, critic_loss


def _update_metrics(batch: _Batch, adv: _Advantages, losses, first_aux, last_aux,
                    critic_loss, replay: bool) -> dict:
  """The update's scalars (`controller_update` lists them)."""
  valid = batch.valid
  metrics = dict(
      loss=losses[-1],
      policy_loss=first_aux["policy_loss"],
      entropy=last_aux["entropy"],
      clip_fraction=last_aux["clip_fraction"],
      approx_kl=last_aux["approx_kl"],
      reward_mean=_masked_mean(batch.rewards, valid),
      critic_mean=_masked_mean(adv.critic_mean, valid),
      critic_spread=_masked_mean(adv.spread, valid),
      confidence=_masked_mean(adv.confidence, valid),
      advantage_mean=adv.raw_mean,
      critic_loss=critic_loss,
      valid_samples=jnp.sum(valid.astype(jnp.float32)))
  if replay:
    metrics.update(replay_loss=first_aux["replay_loss"],
                   replay_ratio_mean=last_aux["replay_ratio_mean"],
                   replay_clip_fraction=last_aux["replay_clip_fraction"],
                   replay_valid=first_aux["replay_valid"])
  return metrics


def compile_update(state: ControllerState, num_samples: int, k: int,
                   hparams: ControllerHParams) -> None:
  """Compiles `controller_update` for batches of `num_samples` subspaces of
  `k` ops per choice point on abstract inputs (nothing runs), e.g. in a
  background thread ahead of its first call, so that call does not wait for
  it. JAX keeps the program for the later call with the same shapes and
  `hparams`; a mismatch would only compile again."""
  n, (c, m) = num_samples, state.logits.shape
  spec = jax.ShapeDtypeStruct
  controller_step.lower(
      state, jax.random.key(0), spec((n, c, k), jnp.int32), spec((n, c), jnp.float32),
      spec((n,), jnp.float32), spec((c, m), jnp.bool_), spec((n,), jnp.bool_),
      hparams).compile()


def controller_update(state: ControllerState, key: jax.Array, ops: jax.Array,
                      behaviour_logp: jax.Array, rewards: jax.Array, alive: jax.Array,
                      hparams: ControllerHParams, valid: jax.Array | None = None):
  """One controller iteration: PPO (+ replay) on the policy, then store the
  batch and refit the critic. Jit-compiled once per shape and `hparams`.

  Args:
    state: ControllerState.
    key: PRNG key (replay sampling, baseline draws, bootstrap weights).
    ops: int [N, C, k] the sampled subspaces (k <= max_ops; -1 slots).
    behaviour_logp: float [N, C] (or [N]) their log-probabilities under the
      policy that drew them, from `sample_subspaces` (per_choice_point=True
      for [N, C]). With [N], the split over choice points is taken from the
      state's policy: exact when the batch was drawn from it at temperature 1.
    rewards: float [N] their scores (NaN = unscored, ignored).
    alive: bool [C, M] current alive mask.
    hparams: ControllerHParams (static).
    valid: optional bool [N]; False rows (unscored, padding) are ignored.

  Returns:
    (new_state, metrics): metrics is a dict of scalars (loss, policy_loss,
    entropy, clip_fraction, approx_kl, reward_mean, critic_mean,
    critic_spread, confidence, advantage_mean, critic_loss, valid_samples,
    and with replay: replay_loss, replay_ratio_mean, replay_clip_fraction,
    replay_valid).
  """
  if valid is None:
    valid = np.ones(np.shape(rewards), bool)
  # (host arrays in: jnp.asarray of a host array compiles a program per shape)
  return controller_step(state, key, np.asarray(ops), np.asarray(behaviour_logp),
                             np.asarray(rewards), np.asarray(alive, bool),
                             np.asarray(valid, bool), hparams)
