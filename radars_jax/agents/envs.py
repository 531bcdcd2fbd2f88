"""Reinforcement-learning environments: gymnax's pure-JAX games, many at once
under `vmap`, reset and stepped inside `jit` (a whole rollout is one
`lax.scan`).

The MinAtar games (10x10xC images with the real games' dynamics, no download)
are what agents are searched on; CartPole-v1 (a 4-vector) is for tiny runs.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from radars_jax.errors import UserError

MINATAR_GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "SpaceInvaders-MinAtar",
                 "Freeway-MinAtar")
SMALL_ENVS = ("CartPole-v1",)
ENV_NAMES = MINATAR_GAMES + SMALL_ENVS


@dataclasses.dataclass(frozen=True)
class Environment:
  """One gymnax environment with its parameters, stepped in batches:
  every function takes and returns arrays with a leading environment axis.
  A finished episode is reset inside `step` (gymnax's own auto-reset): the
  observation it returns is the new episode's first."""
  name: str
  env: Any       # gymnax.environments.environment.Environment
  params: Any    # its EnvParams

  @property
  def obs_shape(self) -> tuple[int, ...]:
    return tuple(self.env.observation_space(self.params).shape)

  @property
  def num_actions(self) -> int:
    return int(self.env.action_space(self.params).n)

  @property
  def max_episode_steps(self) -> int:
    return int(self.params.max_steps_in_episode)

  def reset(self, key: jax.Array, num_envs: int):
    """(observations [E, *obs_shape] float32, states) of `num_envs` fresh episodes."""
    obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(
        jax.random.split(key, num_envs), self.params)
    return obs.astype(jnp.float32), state

  def step(self, key: jax.Array, state, action: jax.Array):
    """(observations, states, rewards [E] float32, dones [E] bool) after
    `action` [E]. Done: the episode ended, by the game (terminated) or by
    the step limit (truncated); like purejaxrl's PPO, training does not
    tell the two apart."""
    num_envs = action.shape[0]
    obs, state, reward, terminated, truncated, _ = jax.vmap(
        self.env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key, num_envs), state, action, self.params)
    return (obs.astype(jnp.float32), state, reward.astype(jnp.float32),
            jnp.logical_or(terminated, truncated))


def make_env(name: str) -> Environment:
  """The environment called `name` (one of `ENV_NAMES`)."""
  if name not in ENV_NAMES:
    raise UserError(f"unknown environment {name!r}; choose one of {', '.join(ENV_NAMES)}")
  import gymnax  # pylint: disable=import-outside-toplevel  # (only agent runs need it)
  env, params = gymnax.make(name)
  return Environment(name, env, params)
