"""The controller's replay buffer: a fixed-capacity ring of scored subspaces.

Every iteration's batch is written into it after the policy update
(`controller_update`); the critic is refit on all of it, and the next
iterations' PPO replays a sample of it as off-policy data. Subspaces are
stored padded to the policy's width (`pad_ops`), so batches of any k share
one buffer.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ReplayBuffer:
  """Fixed-capacity ring buffer of scored subspaces from earlier iterations.

  ops: int32 [capacity, C, max_ops] (padded with -1 beyond k);
  behaviour_logp: float32 [capacity, C] per-choice-point log-probability
  under the policy that drew it; rewards: float32 [capacity]; valid: bool
  [capacity] (False = empty slot or unscored sample); next_index: where the
  next entry goes.
  """
  ops: jax.Array
  behaviour_logp: jax.Array
  rewards: jax.Array
  valid: jax.Array
  next_index: jax.Array

  @classmethod
  def empty(cls, capacity: int, num_choice_points: int, max_ops: int) -> "ReplayBuffer":
    return cls(
        ops=-jnp.ones((capacity, num_choice_points, max_ops), jnp.int32),
        behaviour_logp=jnp.zeros((capacity, num_choice_points), jnp.float32),
        rewards=jnp.zeros((capacity,), jnp.float32),
        valid=jnp.zeros((capacity,), bool),
        next_index=jnp.zeros((), jnp.int32))

  def add(self, ops, behaviour_logp, rewards, valid) -> "ReplayBuffer":
    """Write a batch (overwriting the oldest entries when full)."""
    capacity = self.rewards.shape[0]
    n = rewards.shape[0]
    if n > capacity:  # keep the newest `capacity` entries
      ops, behaviour_logp, rewards, valid = (
          a[-capacity:] for a in (ops, behaviour_logp, rewards, valid))
      n = capacity
    slots = (self.next_index + jnp.arange(n)) % capacity
    return self.replace(
        ops=self.ops.at[slots].set(ops),
        behaviour_logp=self.behaviour_logp.at[slots].set(behaviour_logp),
        rewards=self.rewards.at[slots].set(rewards),
        valid=self.valid.at[slots].set(valid),
        next_index=(self.next_index + n) % capacity)


def pad_ops(ops: jax.Array, max_ops: int) -> jax.Array:
  """[..., C, k] -> [..., C, max_ops], extra slots -1: subspaces of any k in
  the buffer's layout."""
  k = ops.shape[-1]
  pad = [(0, 0)] * (ops.ndim - 1) + [(0, max_ops - k)]
  return jnp.pad(ops.astype(jnp.int32), pad, constant_values=-1)
