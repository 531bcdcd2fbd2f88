"""Actor-critic agents: a torso shared by a policy head (logits over the
actions) and a value head, as A2D's agents have. The torso is a module of
its own, so a searched cell network can take the place of the hand-designed
ones here.

Hand-designed torsos: `MinAtarTorso` (MinAtar's own baseline: one 3x3
convolution of 16 channels, then 128 units) for image observations and
`MLPTorso` (two layers of 64, tanh) for vector observations such as
CartPole's. Weights are orthogonal (gain sqrt(2) in the torso, 0.01 for the
policy head, 1 for the value head), as PPO implementations initialise them.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radars_jax.agents.envs import Environment


def orthogonal_dense(features: int, gain: float = np.sqrt(2)) -> nn.Dense:
  return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain),
                  bias_init=nn.initializers.zeros)


class MinAtarTorso(nn.Module):
  """[..., H, W, C] images -> [..., 128] features."""
  channels: int = 16
  features: int = 128

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    x = nn.Conv(self.channels, (3, 3), padding="VALID",
                kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(obs)
    x = nn.relu(x)
    x = x.reshape(*x.shape[:-3], -1)
    return nn.relu(orthogonal_dense(self.features)(x))


class MLPTorso(nn.Module):
  """[..., D] vectors -> [..., hidden[-1]] features."""
  hidden: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    x = obs
    for width in self.hidden:
      x = nn.tanh(orthogonal_dense(width)(x))
    return x


class ActorCritic(nn.Module):
  """obs -> (policy logits [..., num_actions], value [...])."""
  torso: nn.Module
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    features = self.torso(obs)
    logits = orthogonal_dense(self.num_actions, 0.01)(features)
    value = orthogonal_dense(1, 1.0)(features)[..., 0]
    return logits, value


def hand_designed_agent(env: Environment) -> ActorCritic:
  """The hand-designed agent of `env`: `MinAtarTorso` for image
  observations, `MLPTorso` for vectors."""
  torso = MinAtarTorso() if len(env.obs_shape) == 3 else MLPTorso()
  return ActorCritic(torso, env.num_actions)


def init_agent(agent: ActorCritic, env: Environment, key: jax.Array):
  """The agent's parameters for `env`'s observations (one program)."""
  obs = jnp.zeros((1, *env.obs_shape), jnp.float32)
  return jax.jit(agent.init)(key, obs)["params"]
