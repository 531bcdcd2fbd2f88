"""The controller's critic: an uncertainty-aware ensemble of small MLPs.

Every member predicts a subspace's reward from its multi-hot encoding
(`multi_hot`); the members are vmapped, their parameters stacked on a
leading [members] axis. Ensemble mean = baseline, standard deviation across
members = uncertainty (`ppo` says how each `uncertainty` mode uses it).
Members differ by their initialisation and by Poisson(1) bootstrap weights
on the training samples. The critic is trained on standardised rewards
(mean/std of the replay buffer, kept in the `ControllerState`); predictions
are returned in reward units.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:  # (annotations only: `controller` builds on this module)
  from radars_jax.radars.controller import ControllerState


class CriticMLP(nn.Module):
  """One ensemble member: multi-hot subspace -> predicted (standardised) reward."""
  hidden: tuple[int, ...] = (64, 64)

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


def multi_hot(ops: jax.Array, max_ops: int) -> jax.Array:
  """Float [..., C * max_ops] encoding of subspaces `ops` [..., C, k]: 1 for
  every active op (-1 slots add nothing). The critic's input."""
  encoded = jnp.sum(jax.nn.one_hot(ops, max_ops, dtype=jnp.float32), axis=-2)
  return encoded.reshape(*ops.shape[:-2], ops.shape[-2] * max_ops)


@functools.partial(jax.jit, static_argnames=("input_dim", "members", "hidden"))
def critic_init(key: jax.Array, input_dim: int, members: int,
                hidden: tuple[int, ...]) -> Any:
  """Ensemble parameters, every leaf with a leading [members] axis (one init
  key per member)."""
  model = CriticMLP(tuple(hidden))
  keys = jax.random.split(key, members)
  return jax.vmap(lambda k: model.init(k, jnp.zeros((1, input_dim))))(keys)


def critic_apply(params: Any, x: jax.Array, hidden: tuple[int, ...]) -> jax.Array:
  """float [members, ...]: every member's prediction for inputs x [..., D]."""
  model = CriticMLP(tuple(hidden))
  return jax.vmap(lambda p: model.apply(p, x))(params)


def critic_fit(params: Any, opt_state: Any, key: jax.Array, x: jax.Array, y: jax.Array,
               valid: jax.Array, hidden: tuple[int, ...], lr: float, steps: int,
               bootstrap: bool):
  """Fit the ensemble to (x [N, D], y [N]) on `valid` [N] rows: `steps`
  full-batch Adam steps on the per-member weighted MSE, each member with its
  own Poisson(1) bootstrap weights (if `bootstrap`). Returns (params,
  opt_state, final mean loss)."""
  members = jax.tree_util.tree_leaves(params)[0].shape[0]
  weights = valid.astype(jnp.float32)[None, :] * jnp.ones((members, 1))
  if bootstrap:
    weights = weights * jax.random.poisson(key, 1.0, weights.shape).astype(jnp.float32)
  weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
  optimizer = optax.adam(lr)

  def loss_fn(p):
    pred = critic_apply(p, x, hidden)                               # [members, N]
    return jnp.sum(weights * (pred - y[None, :]) ** 2) / members

  def step(carry, _):
    p, s = carry
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = optimizer.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), None, length=steps)
  return params, opt_state, losses[-1]


def member_predictions(state: ControllerState, x: jax.Array) -> jax.Array:
  """float [members, ...] predictions in reward units for encodings x [..., D]
  by the state's critic."""
  preds = critic_apply(state.critic_params, x, state.critic_hidden)
  return preds * state.reward_std + state.reward_mean


def predict_reward(state: ControllerState, ops: jax.Array):
  """Critic (mean, spread) in reward units for subspaces ops [..., C, k]:
  ensemble mean and standard deviation across members."""
  preds = member_predictions(state, multi_hot(ops, state.logits.shape[-1]))
  return jnp.mean(preds, axis=0), jnp.std(preds, axis=0)
