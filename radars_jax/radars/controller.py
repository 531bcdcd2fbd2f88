"""The RADARS controller: pure-function PPO with an uncertainty-aware critic.

The policy is one logit vector per choice point, `logits[c, o]`
(float32 [num_choice_points, max_ops]). `alive[c, o]` (bool, same shape) says
which ops may still be chosen: pruned ops and padding (choice points with
fewer than `max_ops` ops) are False and behave as logit -inf.

An action is a *subspace*: for every choice point, k distinct alive ops drawn
without replacement (Gumbel-top-k), stored in draw order as
`ops[..., c, j]` (int32); where a choice point has fewer than k alive ops the
extra slots are -1. Its log-probability is the exact Plackett-Luce
probability of the ordered draw, summed over choice points (-1 slots add 0).

Critic: an ensemble of small MLPs (`critic`) that predict a subspace's
reward; ensemble mean = baseline, standard deviation across members =
uncertainty. It is trained on the replay buffer (`replay_buffer`).

How the uncertainty is used (`config.uncertainty`):
  * 'scale_advantage' (default): advantage_i *= confidence_i with
    confidence_i = 1 / (1 + spread_i / (uncertainty_scale * reward_std)):
    where the critic is unsure its baseline is unreliable, so the sample
    moves the policy less.
  * 'exploration_bonus': advantage_i += uncertainty_scale * spread_i: a
    UCB-like bonus for subspaces the critic knows little about.
  * 'trust_critic' (FNAS transfer): baseline_i = confidence_i * critic_i +
    (1 - confidence_i) * batch mean reward: a critic carried over from an
    earlier search (copy `critic_params`, `critic_opt_state`, `reward_mean`,
    `reward_std` from its state into a new one) is trusted only where it is
    sure.
  * 'none': critic mean is the baseline, spread unused.
Until the critic has seen any data (first update) the baseline is the batch
mean reward and confidence is 1.

Policy update (`controller_update`): PPO clipped surrogate over the
iteration's batch for `ppo_epochs` full-batch Adam steps, minus an entropy
bonus (mean over choice points of the alive-op categorical entropy), plus
`replay_weight` times an off-policy term over `replay_batch` samples drawn
uniformly from the replay buffer (earlier iterations): its per-sample weight
is the importance ratio pi_new / pi_behaviour truncated at `importance_clip`
(V-trace / ACER style, gradient min(rho, c) * A * grad log pi). Advantages
are normalised (zero mean, unit std) within the batch and within the replay
sample. Then the batch is written into the ring buffer and the critic is
refit on the buffer for `critic_steps` Adam steps.

Everything is jit-compiled once: shapes are static and the hyperparameters
are a hashable `ControllerHParams` passed as a static argument.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax

from radars_jax import config_defaults
from radars_jax.errors import UserError
from radars_jax.radars.critic import critic_fit, critic_init, member_predictions, multi_hot
from radars_jax.radars.replay_buffer import ReplayBuffer, pad_ops

# A finite stand-in for -inf inside log-softmaxes: exp() of it is 0 in
# float32, and its gradients stay finite (true -inf would give NaNs).
_MASKED = -1e30

UNCERTAINTY_MODES = ("scale_advantage", "exploration_bonus", "trust_critic", "none")
BASELINE_MODES = ("counterfactual", "subspace", "batch_mean")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

# The defaults live with every other config default (`config_defaults`);
# this name is kept for the controller's callers.
default_controller_config = config_defaults.controller_config


@dataclasses.dataclass(frozen=True)
class ControllerHParams:
  """The hyperparameters `controller_update` needs, hashable so that they are
  a static (compile-time) argument. Their values come from a controller
  config (`config_defaults.controller_config` holds the defaults): build with
  `from_config`."""
  lr: float
  max_grad_norm: float
  ppo_epochs: int
  clip_eps: float
  entropy_coef: float
  normalize_advantages: bool
  baseline: str
  baseline_samples: int
  replay_batch: int
  replay_weight: float
  importance_clip: float
  critic_lr: float
  critic_steps: int
  critic_bootstrap: bool
  uncertainty: str
  uncertainty_scale: float

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ControllerHParams":
    """The update's hyperparameters from a controller config, as
    `config_check` checks it (`check_config`, or `check_fields` with
    prefix "controller." for the block alone)."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------
# Policy: sampling, exact log-probabilities, entropy
# ---------------------------------------------------------------------------

def masked_log_softmax(logits: jax.Array, alive: jax.Array) -> jax.Array:
  """Log-probabilities of one categorical draw per choice point over its
  alive ops; dead ops get a huge negative number (probability exactly 0)."""
  return jax.nn.log_softmax(jnp.where(alive, logits, _MASKED), axis=-1)


@functools.partial(jax.jit, static_argnames=("k", "num_samples", "per_choice_point"))
def sample_subspaces(key: jax.Array, logits: jax.Array, alive: jax.Array, k: int,
                     num_samples: int, temperature: float | jax.Array = 1.0,
                     per_choice_point: bool = False):
  """Draw `num_samples` subspaces by Gumbel-top-k.

  Args:
    key: PRNG key.
    logits: float [C, M] policy logits.
    alive: bool [C, M] ops that may be chosen.
    k: ops per choice point (static), 1 <= k <= M.
    num_samples: subspaces to draw (static).
    temperature: sample from softmax(logits / temperature) (1 = the policy).
    per_choice_point: return log-probabilities per choice point [N, C]
      instead of their sum [N] (what `controller_update` wants when the
      samples do not come from the state's own policy at temperature 1).

  Returns:
    ops: int32 [num_samples, C, k], per choice point k distinct alive ops in
      draw order; -1 where the choice point has fewer than k alive ops.
    log_probs: float32 [num_samples] (or [num_samples, C]), Plackett-Luce
      log-probability of each draw under the (tempered) policy that drew it.
  """
  num_choice_points, max_ops = logits.shape
  if not 1 <= k <= max_ops:
    raise UserError(f"subspace size k={k} must be between 1 and {max_ops}")
  tempered = logits / temperature
  gumbel = jax.random.gumbel(key, (num_samples, num_choice_points, max_ops), jnp.float32)
  perturbed = jnp.where(alive, tempered + gumbel, -jnp.inf)
  values, indices = jax.lax.top_k(perturbed, k)
  ops = jnp.where(jnp.isfinite(values), indices, -1).astype(jnp.int32)
  point_logp = log_prob_per_point(tempered, alive, ops)
  return ops, (point_logp if per_choice_point else jnp.sum(point_logp, axis=-1))


@jax.jit
def log_prob_per_point(logits: jax.Array, alive: jax.Array, ops: jax.Array) -> jax.Array:
  """Exact Plackett-Luce log-probability of each choice point's ordered draw.

  log p_c = sum_j [ l[c, o_j] - logsumexp_{o alive, not in o_<j} l[c, o] ].

  Args:
    logits: float [C, M]; alive: bool [C, M].
    ops: int [..., C, k] in draw order, -1 for empty slots (contribute 0).

  Returns:
    float [..., C]. An op that is not alive gets a huge negative value.
  """
  max_ops = logits.shape[-1]
  masked = jnp.where(alive, logits, _MASKED)
  onehot = jax.nn.one_hot(ops, max_ops, dtype=jnp.float32)          # [..., C, k, M]
  drawn_before = jnp.cumsum(onehot, axis=-2) - onehot               # exclusive
  remaining = alive[:, None, :] & (drawn_before < 0.5)              # [..., C, k, M]
  normaliser = jax.nn.logsumexp(jnp.where(remaining, masked[:, None, :], _MASKED), axis=-1)
  chosen = jnp.sum(onehot * masked[:, None, :], axis=-1)
  terms = jnp.where(ops >= 0, chosen - normaliser, 0.0)
  return jnp.sum(terms, axis=-1)


def log_prob(logits: jax.Array, alive: jax.Array, ops: jax.Array) -> jax.Array:
  """Exact Plackett-Luce log-probability of ordered draws `ops` [..., C, k]
  (-1 slots contribute 0), summed over choice points: float [...]."""
  return jnp.sum(log_prob_per_point(logits, alive, ops), axis=-1)


def policy_entropy(logits: jax.Array, alive: jax.Array) -> jax.Array:
  """Mean over choice points of the entropy of one categorical draw over the
  alive ops (the entropy bonus; exact PL entropy of k draws is costlier and
  moves the same way)."""
  logp = masked_log_softmax(logits, alive)
  per_point = -jnp.sum(jnp.where(alive, jnp.exp(logp) * logp, 0.0), axis=-1)
  return jnp.mean(per_point)


def feasible(ops: jax.Array, alive: jax.Array) -> jax.Array:
  """bool [...]: every op of the subspace `ops` [..., C, k] is still alive."""
  num_choice_points = alive.shape[0]
  point = jnp.arange(num_choice_points)[:, None]
  ok = jnp.where(ops >= 0, alive[point, jnp.maximum(ops, 0)], True)
  return jnp.all(ok, axis=(-2, -1))


def importance_weights(new_logp: jax.Array, behaviour_logp: jax.Array,
                       importance_clip: float) -> jax.Array:
  """Truncated importance ratios min(pi_new / pi_behaviour, c)."""
  return jnp.minimum(jnp.exp(new_logp - behaviour_logp), importance_clip)


@jax.jit
def policy_probabilities(state: "ControllerState", alive: jax.Array) -> jax.Array:
  """float [C, M]: probability of each op at its choice point (one draw);
  0 for dead ops."""
  return jnp.where(alive, jnp.exp(masked_log_softmax(state.logits, alive)), 0.0)


@jax.jit
def prune(alive: jax.Array, probs: jax.Array, threshold: float) -> jax.Array:
  """New alive mask without every op whose probability is below `threshold`
  at its choice point, but never emptying a choice point: the most probable
  alive op (first on ties; NaN counts as lowest) always stays. Dead ops stay
  dead; a choice point with no alive op is left as it is."""
  alive = jnp.asarray(alive, bool)
  probs = jnp.asarray(probs, jnp.float32)
  score = jnp.where(alive & ~jnp.isnan(probs), probs, -jnp.inf)
  score = jnp.where(alive & jnp.isnan(probs), -jnp.finfo(jnp.float32).max, score)
  keep_best = jax.nn.one_hot(jnp.argmax(score, axis=-1), alive.shape[-1], dtype=bool)
  return alive & ((probs >= threshold) | keep_best)


def most_likely_subspace(logits: jax.Array, alive: jax.Array, k: int) -> jax.Array:
  """int32 [C, k]: the policy's most likely draw (the k most probable alive
  ops per choice point, best first), -1 where fewer than k are alive."""
  values, indices = jax.lax.top_k(jnp.where(alive, logits, -jnp.inf), k)
  return jnp.where(jnp.isfinite(values), indices, -1).astype(jnp.int32)


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

@flax.struct.dataclass
class ControllerState:
  """Everything the controller learns, as one pytree.

  logits: float32 [C, M] policy logits; policy_opt_state: optax Adam state;
  critic_params: ensemble parameters (leading [members] axis);
  critic_opt_state: its Adam state; buffer: ReplayBuffer; reward_mean,
  reward_std: the standardisation the critic was last trained with;
  step: number of updates done. critic_hidden is static.
  """
  logits: jax.Array
  policy_opt_state: Any
  critic_params: Any
  critic_opt_state: Any
  buffer: ReplayBuffer
  reward_mean: jax.Array
  reward_std: jax.Array
  step: jax.Array
  critic_hidden: tuple = flax.struct.field(pytree_node=False, default=(64, 64))


def _policy_optimizer(lr: float, max_grad_norm: float):
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def init_controller(key: jax.Array, num_choice_points: int, max_ops: int,
                    config: ml_collections.ConfigDict) -> ControllerState:
  """A fresh controller: uniform policy (zero logits), random critic
  ensemble, empty replay buffer."""
  return _fresh_controller(key, num_choice_points, max_ops,
                           tuple(int(h) for h in config.critic_hidden),
                           int(config.critic_members), float(config.lr),
                           float(config.max_grad_norm), float(config.critic_lr),
                           int(config.replay_capacity))


@functools.partial(jax.jit, static_argnums=tuple(range(1, 9)))
def _fresh_controller(key, num_choice_points: int, max_ops: int, hidden: tuple[int, ...],
                      members: int, lr: float, max_grad_norm: float, critic_lr: float,
                      capacity: int) -> ControllerState:
  # (one program: op by op, its dozens of small arrays compiled one each)
  logits = jnp.zeros((num_choice_points, max_ops), jnp.float32)
  critic_params = critic_init(key, num_choice_points * max_ops, members, hidden)
  return ControllerState(
      logits=logits,
      policy_opt_state=_policy_optimizer(lr, max_grad_norm).init(logits),
      critic_params=critic_params,
      critic_opt_state=optax.adam(critic_lr).init(critic_params),
      buffer=ReplayBuffer.empty(capacity, num_choice_points, max_ops),
      reward_mean=jnp.zeros((), jnp.float32),
      reward_std=jnp.ones((), jnp.float32),
      step=jnp.zeros((), jnp.int32),
      critic_hidden=hidden)


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
  preds = member_predictions(state, inputs)                                 # [m,N,C,A]
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
  w = jnp.broadcast_to(valid, x.shape).astype(jnp.float32)
  return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1.0)


def _advantages(state: ControllerState, ops, rewards, valid, alt_rows, alt_weights,
                hp: ControllerHParams, critic_ready):
  """Per-sample, per-choice-point advantages [N, C] (before normalisation)
  for subspaces ops [N, C, M], with the critic's mean [N], spread [N] and
  confidence [N] at the sampled subspaces."""
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


class _Replay(NamedTuple):
  """A sample of the replay buffer (earlier iterations): ops [R, C, M], the
  log-probabilities of the policy that drew them [R, C], valid [R] and
  normalised advantages [R, C]."""
  ops: jax.Array
  behaviour_logp: jax.Array
  valid: jax.Array
  advantages: jax.Array


@functools.partial(jax.jit, static_argnames=("hparams",))
def _controller_update(state: ControllerState, key: jax.Array, ops: jax.Array,
                       behaviour_logp: jax.Array, rewards: jax.Array, alive: jax.Array,
                       valid: jax.Array, hparams: ControllerHParams):
  """`controller_update` as one jitted program (the helpers below are
  traced into it): advantages, replay sample, PPO steps, critic refit."""
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
  logits, policy_opt_state, losses, first_aux, last_aux = _ppo(
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


def _batch_advantages(state: ControllerState, batch: _Batch, alt_rows, alt_weights,
                      hp: ControllerHParams, critic_ready) -> _Advantages:
  """The batch's advantages, normalised against the critic's reward scale
  (the batch's own reward std before the critic has seen any data)."""
  valid = batch.valid
  advantages, critic_mean, spread, confidence = _advantages(
      state, batch.ops, batch.rewards, valid, alt_rows, alt_weights, hp, critic_ready)
  raw_mean = _masked_mean(advantages, valid[:, None])
  rewards = batch.rewards
  batch_std = jnp.sqrt(_masked_mean((rewards - _masked_mean(rewards, valid)) ** 2, valid))
  reward_scale = jnp.where(critic_ready, state.reward_std, batch_std)
  advantages = _normalise(advantages, valid[:, None], hp.normalize_advantages, reward_scale)
  return _Advantages(advantages, critic_mean, spread, confidence, raw_mean, reward_scale)


def _replay_sample(state: ControllerState, key, alive, alt_rows, alt_weights,
                   hp: ControllerHParams, critic_ready, reward_scale) -> _Replay:
  """`hp.replay_batch` entries of the buffer, uniform over the valid ones
  still feasible, with their advantages under the critic before this batch."""
  buffer = state.buffer
  replay_ok = buffer.valid & feasible(buffer.ops, alive)
  choice_logits = jnp.where(replay_ok, 0.0, -jnp.inf)
  choice_logits = jnp.where(jnp.any(replay_ok), choice_logits, 0.0)
  idx = jax.random.categorical(key, choice_logits, shape=(hp.replay_batch,))
  r_ops, r_blogp, r_valid = buffer.ops[idx], buffer.behaviour_logp[idx], replay_ok[idx]
  r_adv, _, _, _ = _advantages(state, r_ops, buffer.rewards[idx], r_valid,
                               alt_rows, alt_weights, hp, critic_ready)
  r_adv = _normalise(r_adv, r_valid[:, None], hp.normalize_advantages, reward_scale)
  return _Replay(r_ops, r_blogp, r_valid, r_adv)


def _policy_loss(logits, alive, batch: _Batch, advantages, replay: _Replay | None,
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


def _replay_loss(logits, alive, replay: _Replay, hp: ControllerHParams):
  """(loss, raw ratios rho [R, C]) of the off-policy term: -min(rho, c) * A *
  log pi over the replay sample, rho = pi_new / pi_behaviour (no gradient
  through rho)."""
  r_logp = log_prob_per_point(logits, alive, replay.ops)
  rho_raw = jnp.exp(r_logp - replay.behaviour_logp)
  rho = jax.lax.stop_gradient(importance_weights(r_logp, replay.behaviour_logp,
                                                 hp.importance_clip))
  replay_loss = -_masked_mean(rho * replay.advantages * r_logp, replay.valid[:, None])
  return replay_loss, rho_raw


def _ppo(state: ControllerState, alive, batch: _Batch, advantages, replay: _Replay | None,
         hp: ControllerHParams):
  """`hp.ppo_epochs` full-batch Adam steps on the logits (dead ops' gradients
  zeroed), in one lax.scan: (logits, optimiser state, the losses, the first
  and the last step's aux)."""
  optimizer = _policy_optimizer(hp.lr, hp.max_grad_norm)

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
  _controller_update.lower(
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
  return _controller_update(state, key, np.asarray(ops), np.asarray(behaviour_logp),
                            np.asarray(rewards), np.asarray(alive, bool),
                            np.asarray(valid, bool), hparams)
