"""The RADARS controller: its policy over subspaces and its state.

The policy is one logit vector per choice point, `logits[c, o]`
(float32 [num_choice_points, max_ops]). `alive[c, o]` (bool, same shape) says
which ops may still be chosen: pruned ops and padding (choice points with
fewer than `max_ops` ops) are False and behave as logit -inf.

An action is a *subspace*: for every choice point, k distinct alive ops drawn
without replacement (Gumbel-top-k), stored in draw order as
`ops[..., c, j]` (int32); where a choice point has fewer than k alive ops the
extra slots are -1. Its log-probability is the exact Plackett-Luce
probability of the ordered draw, summed over choice points (-1 slots add 0).

This module holds the hyperparameters, the state (`ControllerState`, one
pytree), sampling and pruning. Beside it:
  * `ppo`: the update (`ppo.controller_update`: advantages, PPO with
    replay, critic refit), one jitted program compiled once per shape and
    hyperparameters;
  * `critic`: the uncertainty-aware critic ensemble that gives the baseline;
  * `replay_buffer`: the ring of scored subspaces the critic trains on and
    PPO replays.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from radars_jax import config_defaults
from radars_jax.errors import UserError
from radars_jax.radars.critic import critic_init
from radars_jax.radars.replay_buffer import ReplayBuffer

# A finite stand-in for -inf inside log-softmaxes: exp() of it is 0 in
# float32, and its gradients stay finite (true -inf would give NaNs).
_MASKED = -1e30

# The choices of `config.uncertainty` and `config.baseline` (`ppo` says what
# each does).
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
def policy_probabilities(state: ControllerState, alive: jax.Array) -> jax.Array:
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


def policy_optimizer(lr: float, max_grad_norm: float):
  """The logits' optimiser: Adam after clipping the global gradient norm
  (`init_controller` builds its state, `ppo` steps it)."""
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
      policy_opt_state=policy_optimizer(lr, max_grad_norm).init(logits),
      critic_params=critic_params,
      critic_opt_state=optax.adam(critic_lr).init(critic_params),
      buffer=ReplayBuffer.empty(capacity, num_choice_points, max_ops),
      reward_mean=jnp.zeros((), jnp.float32),
      reward_std=jnp.ones((), jnp.float32),
      step=jnp.zeros((), jnp.int32),
      critic_hidden=hidden)


# ---------------------------------------------------------------------------
# Update entry points (the program is `ppo.controller_step`)
# ---------------------------------------------------------------------------

# Both run `ppo.controller_step`, one jitted program. `ppo` builds on this
# module (the sampling functions, the state), so it is imported where it is
# called: at the top of this module that would be a circular import.
