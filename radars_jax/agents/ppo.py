"""PPO for actor-critic agents (the teacher A2D distils from), in the style
of purejaxrl's ppo.py: one update (a rollout of every environment, GAE,
epochs of minibatch steps) is one jitted pure function of the runner state.

    trainer = ppo.PPO(envs.make_env("Breakout-MinAtar"), agent, ppo.PPOHParams())
    state, history = ppo.train(trainer, jax.random.key(0), num_updates=100,
                               checkpoint_dir=workdir / "checkpoints" / "teacher")
    result = trainer.evaluate(state.params, jax.random.key(1))   # >= 64 episodes

Everything random comes from the runner state's key, so training resumed
from a checkpoint continues exactly as the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from radars_jax import checkpointing
from radars_jax import metrics as metrics_lib
from radars_jax.agents.envs import Environment
from radars_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class PPOHParams:
  """PPO's settings (purejaxrl's for MinAtar by default). Hashable: the
  update is compiled once per settings."""
  num_envs: int = 64          # environments stepped together
  num_steps: int = 128        # steps of each environment per update
  update_epochs: int = 4      # passes over each rollout
  num_minibatches: int = 8    # minibatches per pass
  lr: float = 5e-4
  anneal_lr: bool = True      # linearly to 0 over `num_updates`
  num_updates: int = 1000     # the schedule's length (updates, not steps)
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5

  def __post_init__(self):
    for name in ("num_envs", "num_steps", "update_epochs", "num_minibatches", "num_updates"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise UserError(f"ppo {name} must be a positive integer, got {getattr(self, name)!r}")
    if (self.num_envs * self.num_steps) % self.num_minibatches:
      raise UserError(f"ppo num_envs * num_steps ({self.num_envs * self.num_steps}) must be a "
                      f"multiple of num_minibatches ({self.num_minibatches})")


class RunnerState(flax.struct.PyTreeNode):
  """Everything training carries from one update to the next."""
  params: Any
  opt_state: Any
  env_state: Any
  obs: jax.Array               # [E, *obs_shape] the current observations
  episode_return: jax.Array    # [E] return of each environment's running episode
  key: jax.Array
  update: jax.Array            # int32: updates done
  constants: Any = None        # what `extra_loss` reads and no step changes (a teacher's params)


class Transition(NamedTuple):
  """One step of every environment: [E] or [E, ...] each (stacked over
  steps by the rollout's scan: [T, E, ...])."""
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  done: jax.Array
  value: jax.Array
  log_prob: jax.Array


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array,
        gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimates and value targets of a rollout [T, E]
  (`dones[t]`: the episode ended at step t, so step t+1 does not bootstrap it)."""
  def backwards(carry, step):
    advantage, next_value = carry
    reward, value, done = step
    delta = reward + gamma * next_value * (1.0 - done) - value
    advantage = delta + gamma * lam * (1.0 - done) * advantage
    return (advantage, value), advantage

  _, advantages = jax.lax.scan(backwards, (jnp.zeros_like(last_value), last_value),
                               (rewards, values, dones.astype(jnp.float32)), reverse=True)
  return advantages, advantages + values


def action_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
  """log pi(action) [...] from logits [..., A] and actions [...]."""
  return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], -1)[..., 0]


# `extra_loss(params, obs, logits, value, constants) -> (loss, metrics)`: a
# term added to PPO's loss (A2D: distillation and the FLOPs cost).
ExtraLoss = Callable[[Any, jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, dict]]


def ppo_loss(agent: nn.Module, params, batch: Transition, advantages: jax.Array,
             targets: jax.Array, hp: PPOHParams, extra_loss: ExtraLoss | None = None,
             constants=None):
  """Clipped surrogate + clipped value loss - entropy bonus over a minibatch,
  plus `extra_loss` if given; (loss, metrics)."""
  logits, value = agent.apply({"params": params}, batch.obs)
  ratio = jnp.exp(action_log_prob(logits, batch.action) - batch.log_prob)
  advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  actor_loss = -jnp.minimum(ratio * advantages,
                            jnp.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps) * advantages).mean()
  clipped = batch.value + jnp.clip(value - batch.value, -hp.clip_eps, hp.clip_eps)
  value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (clipped - targets) ** 2).mean()
  log_probs = jax.nn.log_softmax(logits)
  entropy = -(jnp.exp(log_probs) * log_probs).sum(-1).mean()
  loss = actor_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
  metrics = {"actor_loss": actor_loss, "value_loss": value_loss, "entropy": entropy,
             "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean()}
  if extra_loss is not None:
    extra, extra_metrics = extra_loss(params, batch.obs, logits, value, constants)
    loss = loss + extra
    metrics.update(extra_metrics)
  return loss, metrics


def optimizer(hp: PPOHParams) -> optax.GradientTransformation:
  """PPO's: the gradient's global norm clipped, then Adam (its learning
  rate annealed linearly to 0 over the run if `hp.anneal_lr`)."""
  lr = hp.lr
  if hp.anneal_lr:
    lr = optax.linear_schedule(hp.lr, 0.0, hp.num_updates * hp.update_epochs * hp.num_minibatches)
  return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(lr, eps=1e-5))


class PPO:
  """PPO training of `agent` (obs -> (logits, value)) on `env` with settings
  `hp`. `tx`: the optimiser (default `optimizer(hp)`); `extra_loss`: a term
  added to the loss (see `ExtraLoss`), which reads the runner state's
  `constants` (`init(key, constants)`); `unroll`: the update's minibatch
  steps unrolled instead of looped (None: as measured fastest, below)."""

  def __init__(self, env: Environment, agent: nn.Module, hp: PPOHParams,
               unroll: bool | None = None, tx: optax.GradientTransformation | None = None,
               extra_loss: ExtraLoss | None = None):
    self.env, self.agent, self.hp = env, agent, hp
    self.tx = optimizer(hp) if tx is None else tx
    self.extra_loss = extra_loss
    # Image observations on the CPU: the epochs' minibatch steps unrolled.
    # XLA's CPU backend runs a convolution's gradient inside a loop about 6x
    # slower than in straight-line code (Breakout-MinAtar: an update 0.70 s
    # against 4.0 s, its compile 26 s against 8 s; docs/performance.md).
    # Elsewhere (vector observations: dense layers only; GPU, TPU) loops.
    if unroll is None:
      unroll = jax.default_backend() == "cpu" and len(env.obs_shape) == 3
    self.unroll = unroll
    self.update = jax.jit(self._update)
    self._init_jit = jax.jit(self._init)
    self._evaluate = jax.jit(self._evaluate_fn, static_argnames=("num_episodes", "greedy"))

  def init(self, key: jax.Array, constants=None) -> RunnerState:
    """Fresh parameters and environments (one program), carrying
    `constants` for `extra_loss`."""
    return self._init_jit(key, constants)

  def abstract_state(self, constants=None) -> RunnerState:
    """The runner state's shapes and dtypes (nothing is computed): what the
    update is lowered on to compile it ahead (`jax.jit(self.update_fn)`)."""
    return jax.eval_shape(self._init, jax.random.key(0), constants)

  @property
  def update_fn(self):
    """The update as a pure function of the runner state (not jitted)."""
    return self._update

  def _init(self, key, constants):
    key, init_key, env_key = jax.random.split(key, 3)
    params = self.agent.init(init_key, jnp.zeros((1, *self.env.obs_shape)))["params"]
    obs, env_state = self.env.reset(env_key, self.hp.num_envs)
    return RunnerState(params, self.tx.init(params), env_state, obs,
                       jnp.zeros(self.hp.num_envs), key, jnp.zeros((), jnp.int32), constants)

  def _rollout(self, state: RunnerState):
    """`num_steps` steps of every environment under the current policy:
    (state after them, transitions [T, E], returns of the episodes that
    ended at each step [T, E], 0 elsewhere)."""
    def one_step(state: RunnerState, _):
      key, act_key, env_key = jax.random.split(state.key, 3)
      logits, value = self.agent.apply({"params": state.params}, state.obs)
      action = jax.random.categorical(act_key, logits)
      log_prob = action_log_prob(logits, action)
      obs, env_state, reward, done = self.env.step(env_key, state.env_state, action)
      episode_return = state.episode_return + reward
      step = Transition(state.obs, action, reward, done, value, log_prob)
      state = state.replace(env_state=env_state, obs=obs, key=key,
                            episode_return=jnp.where(done, 0.0, episode_return))
      return state, (step, jnp.where(done, episode_return, 0.0))

    return jax.lax.scan(one_step, state, None, length=self.hp.num_steps)

  def _update(self, state: RunnerState):
    """One PPO update: a rollout, its advantages, `update_epochs` passes of
    `num_minibatches` gradient steps; (state, metrics of the update)."""
    hp = self.hp
    state, (steps, ended) = self._rollout(state)
    _, last_value = self.agent.apply({"params": state.params}, state.obs)
    advantages, targets = gae(steps.reward, steps.value, steps.done, last_value, hp.gamma,
                              hp.gae_lambda)
    flat = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]),
                                  (steps, advantages, targets))
    grad_fn = jax.value_and_grad(
        lambda p, b: ppo_loss(self.agent, p, *b, hp, self.extra_loss, state.constants),
        has_aux=True)

    def minibatch_step(carry, batch):
      params, opt_state = carry
      (loss, aux), grads = grad_fn(params, batch)
      updates, opt_state = self.tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), dict(aux, loss=loss)

    def epoch(carry, key):
      order = jax.random.permutation(key, hp.num_envs * hp.num_steps)
      shuffled = jax.tree_util.tree_map(
          lambda x: x[order].reshape(hp.num_minibatches, -1, *x.shape[1:]), flat)
      return jax.lax.scan(minibatch_step, carry, shuffled, unroll=self.unroll)

    key, *epoch_keys = jax.random.split(state.key, hp.update_epochs + 1)
    (params, opt_state), losses = jax.lax.scan(epoch, (state.params, state.opt_state),
                                               jnp.stack(epoch_keys), unroll=self.unroll)
    episodes = steps.done.sum()
    metrics = {name: value.mean() for name, value in losses.items()}
    metrics.update(episodes=episodes.astype(jnp.float32),
                   episode_return=ended.sum() / jnp.maximum(episodes, 1))
    state = state.replace(params=params, opt_state=opt_state, key=key, update=state.update + 1)
    return state, metrics

  def evaluate(self, params, key: jax.Array, num_episodes: int = 64,
               greedy: bool = False) -> dict:
    """Mean and std of the return of `num_episodes` whole episodes (one per
    environment, run until every one has ended or the environment's step
    limit), actions drawn from the policy (`greedy`: its most likely one)."""
    if num_episodes < 1:
      raise UserError(f"num_episodes must be at least 1, got {num_episodes}")
    returns = np.asarray(self._evaluate(params, key, num_episodes=num_episodes, greedy=greedy))
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "episodes": int(returns.size)}

  def _evaluate_fn(self, params, key, num_episodes: int, greedy: bool):
    key, reset_key = jax.random.split(key)
    obs, env_state = self.env.reset(reset_key, num_episodes)
    zeros = jnp.zeros(num_episodes)
    limit = self.env.max_episode_steps

    def running(carry):
      *_, finished, t = carry
      return ~finished.all() & (t < limit)

    def body(carry):
      obs, env_state, key, returns, finished, t = carry
      key, act_key, env_key = jax.random.split(key, 3)
      logits, _ = self.agent.apply({"params": params}, obs)
      action = (jnp.argmax(logits, -1) if greedy
                else jax.random.categorical(act_key, logits))
      obs, env_state, reward, done = self.env.step(env_key, env_state, action)
      returns = returns + jnp.where(finished, 0.0, reward)
      return obs, env_state, key, returns, finished | done, t + 1

    carry = (obs, env_state, key, zeros, zeros.astype(bool), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(running, body, carry)[3]


def train(trainer: PPO, key: jax.Array, num_updates: int,
          checkpoint_dir=None, checkpoint_every: int = 50,
          writer: metrics_lib.MetricWriter | None = None, progress: bool = True,
          constants=None, name: str = "teacher", warm_start=None, compiled_update=None):
  """Runs `num_updates` updates from a fresh state (`trainer.init(key,
  constants)`; `warm_start`: a function of its parameters giving those to
  start from, with a fresh optimiser state), or from the latest checkpoint
  in `checkpoint_dir` (a directory or an open `checkpointing.Checkpointer`;
  saved every `checkpoint_every` updates and at the end); (final state,
  [metrics of each update run here, with its wall seconds as "seconds"]).
  `name`: the progress bar's and the metrics' prefix. `compiled_update`:
  the trainer's update compiled ahead (on `trainer.abstract_state`), run
  instead of `trainer.update`."""
  if num_updates < 1:
    raise UserError(f"num_updates must be at least 1, got {num_updates}")
  update_fn = trainer.update if compiled_update is None else compiled_update
  state = trainer.init(key, constants)
  if warm_start is not None:
    params = jax.device_put(warm_start(state.params))
    state = state.replace(params=params, opt_state=trainer.tx.init(params))
  if isinstance(checkpoint_dir, checkpointing.Checkpointer):   # (the caller's: it closes it)
    ckpt, owned = checkpoint_dir, False
  else:
    ckpt = checkpointing.Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    owned = ckpt is not None
  history = []
  try:
    if ckpt is not None:
      restored = ckpt.restore_latest(state)
      if restored is not None:
        state = restored[1]
    start = int(state.update)
    env_steps = trainer.hp.num_envs * trainer.hp.num_steps
    with metrics_lib.progress_bar(num_updates, f"{name} {trainer.env.name}", initial=start,
                                  enabled=progress) as bar:
      for update in range(start, num_updates):
        started = time.perf_counter()
        state, metrics = update_fn(state)
        metrics = {name: float(v) for name, v in jax.device_get(metrics).items()}
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if writer is not None:
          writer.scalars((update + 1) * env_steps, metrics, prefix=f"{name}/")
        bar.update(1)
        bar.set_postfix(ret=f"{metrics['episode_return']:.1f}")
        if ckpt is not None and ((update + 1) % checkpoint_every == 0
                                 or update + 1 == num_updates):
          ckpt.save(update + 1, state, {"env": trainer.env.name})
  finally:
    if owned:
      ckpt.close()
  return state, history
