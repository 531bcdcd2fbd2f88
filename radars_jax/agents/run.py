"""`method=a2d`: the whole A2D run of `python -m radars_jax.main`.

    python -m radars_jax.main --config configs/minatar.py --workdir runs/a2d

Phases, each a PPO run (`agents.ppo.train`: a progress bar, TensorBoard and
metrics.jsonl under its name, orbax checkpoints in WORKDIR/checkpoints/NAME)
whose result is written to WORKDIR/agents/NAME.json when it ends:
1. `teacher`: the hand-designed agent (`networks.hand_designed_agent`),
   or the teacher of an earlier run's workdir (`agents.teacher=WORKDIR`);
2. `a2d_search`: single-level DNAS of the agent supernet with the teacher
   distilled and the FLOPs term (`agents.a2d`); its genotype is the run's;
3. `a2d`: the derived agent retrained from scratch with distillation,
   and with `agents.undistilled` `a2d_plain`, without;
and with `agents.baselines`: `dnas_search` / `dnas`, the same search and
retraining without distillation (plain DNAS for agents), and `small`, a
hand-designed agent (`networks.MinAtarTorso`) sized to the A2D agent's
multiply-adds. Every agent is evaluated on `agents.eval_episodes` whole
episodes: mean return, multiply-adds, parameters, environment steps per
second of its training. A killed run started again skips the finished
phases and resumes the unfinished one from its checkpoint: the same result
as one run through (everything random comes from `seed`).

Outputs: summary.json (every agent, the searches' alphas, the targets),
genotype.json (A2D's), and report/ (the found cell, alpha heatmap, return
curves, return against multiply-adds).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax

from radars_jax import checkpointing
from radars_jax import metrics as metrics_lib
from radars_jax import performance
from radars_jax import report
from radars_jax import workdir as workdir_lib
from radars_jax.agents import a2d
from radars_jax.agents import envs
from radars_jax.agents import networks
from radars_jax.agents import ppo
from radars_jax.agents import supernet as agent_supernet
from radars_jax.errors import UserError
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib

PHASES_DIR = "agents"


def ppo_hparams(agents_config, num_updates: int) -> ppo.PPOHParams:
  c = agents_config
  return ppo.PPOHParams(num_envs=int(c.num_envs), num_steps=int(c.num_steps),
                        update_epochs=int(c.update_epochs),
                        num_minibatches=int(c.num_minibatches), lr=float(c.lr),
                        ent_coef=float(c.ent_coef), num_updates=int(num_updates))


def a2d_weights(agents_config) -> a2d.A2DWeights:
  """The A2D loss's weights of `config.agents`."""
  c = agents_config
  return a2d.A2DWeights(float(c.actor_weight), float(c.critic_weight), float(c.flops_weight))


def search_dnas_config(config):
  """`config.dnas` with the agents' alpha learning rate (`agents.alpha_lr`)."""
  dnas_config = config.dnas.copy_and_resolve_references()
  dnas_config.alpha_lr = float(config.agents.alpha_lr)
  return dnas_config


def small_torso(target_macs: float, env: envs.Environment) -> networks.MinAtarTorso:
  """The `MinAtarTorso` (channels x features from a small grid) whose
  agent's multiply-adds are nearest `target_macs`."""
  best = None
  for channels in (2, 4, 8, 16):
    for features in (8, 16, 32, 64, 128):
      torso = networks.MinAtarTorso(channels, features)
      macs = agent_supernet.agent_macs(networks.ActorCritic(torso, env.num_actions),
                                       env.obs_shape)
      if best is None or abs(macs - target_macs) < best[0]:
        best = (abs(macs - target_macs), torso)
  return best[1]


@dataclasses.dataclass
class A2DRun:
  """One run's settings and the phases' shared pieces."""
  config: Any
  path: Path
  env: envs.Environment
  space: spaces_lib.SearchSpace
  writer: metrics_lib.MetricWriter
  teacher: networks.ActorCritic
  teacher_macs: int

  @classmethod
  def create(cls, config, path: Path, writer: metrics_lib.MetricWriter) -> "A2DRun":
    """The run of (resolved) `config` in workdir `path`: its environment,
    agent space and hand-designed teacher."""
    env = envs.make_env(config.agents.env)
    space = spaces_lib.space_from_config(config.space)
    agent_supernet.check_agent_space(space)
    teacher = networks.hand_designed_agent(env)
    (path / PHASES_DIR).mkdir(exist_ok=True)
    return cls(config, path, env, space, writer, teacher,
               agent_supernet.agent_macs(teacher, env.obs_shape))

  @property
  def agents(self):
    return self.config.agents

  def phase_path(self, name: str) -> Path:
    return self.path / PHASES_DIR / f"{name}.json"

  def key(self, name: str) -> jax.Array:
    """The phase's own key: the same in every run of the same seed."""
    return jax.random.fold_in(jax.random.key(int(self.config.seed)),
                              sum(ord(ch) * 31 ** i for i, ch in enumerate(name)) % (2 ** 31))

  def train(self, name: str, trainer: ppo.PPO, num_updates: int, constants=None):
    """`ppo.train` of phase `name` (resumed from its checkpoints); (final
    state, {env steps per second, seconds, return curve})."""
    started = time.perf_counter()
    state, history = ppo.train(
        trainer, self.key(name), num_updates,
        checkpoint_dir=self.path / "checkpoints" / name,
        checkpoint_every=int(self.agents.checkpoint_every), writer=self.writer,
        progress=bool(self.config.progress_bar), constants=constants, name=name)
    self.writer.flush()
    seconds = time.perf_counter() - started
    steps = trainer.hp.num_envs * trainer.hp.num_steps
    timed = [h["seconds"] for h in history[1:]]   # (the first update compiles)
    return state, {
        "updates": num_updates, "env_steps": num_updates * steps,
        "env_steps_per_second": steps * len(timed) / sum(timed) if timed else None,
        "seconds": seconds, "resumed": len(history) < num_updates,
    }

  def evaluate(self, trainer: ppo.PPO, params, name: str) -> dict:
    result = trainer.evaluate(params, jax.random.fold_in(self.key(name), 1),
                              num_episodes=int(self.agents.eval_episodes))
    result["macs"] = agent_supernet.agent_macs(trainer.agent, self.env.obs_shape)
    result["params"] = supernet_lib.count_params(params)
    return result


def _finished(run: A2DRun, name: str) -> dict | None:
  path = run.phase_path(name)
  return workdir_lib.read_json(path) if path.exists() else None


def _final_state(run: A2DRun, name: str, trainer: ppo.PPO) -> ppo.RunnerState:
  """The last checkpoint of finished phase `name` (the teacher's: no constants)."""
  ckpt = checkpointing.Checkpointer(run.path / "checkpoints" / name)
  try:
    restored = ckpt.restore_latest(trainer.init(run.key(name)))
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{run.path / 'checkpoints' / name} has no checkpoint: the phase's result "
                    f"{run.phase_path(name)} has lost its state (remove it to run it again)")
  return restored[1]


def teacher_phase(run: A2DRun) -> tuple[Any, dict]:
  """(the teacher's params, its result)."""
  hp = ppo_hparams(run.agents, run.agents.teacher_updates)
  trainer = ppo.PPO(run.env, run.teacher, hp)
  source = run.agents.teacher
  if source:
    other = dataclasses.replace(run, path=Path(source).expanduser())
    result = _finished(other, "teacher")
    if result is None:
      raise UserError(f"agents.teacher={source}: no finished teacher there "
                      f"({other.phase_path('teacher')} is missing)")
    if result.get("env") != run.env.name:
      raise UserError(f"agents.teacher={source} was trained on {result.get('env')}, "
                      f"not {run.env.name}")
    return _final_state(other, "teacher", trainer).params, dict(result, loaded_from=str(source))
  result = _finished(run, "teacher")
  if result is not None:
    return _final_state(run, "teacher", trainer).params, result
  state, info = run.train("teacher", trainer, hp.num_updates)
  result = dict(info, env=run.env.name, **run.evaluate(trainer, state.params, "teacher"))
  workdir_lib.write_json(run.phase_path("teacher"), result)
  return state.params, result


def search_phase(run: A2DRun, name: str, weights: a2d.A2DWeights, teacher_params) -> dict:
  """A2D (or, without distillation, plain DNAS) over the agent space."""
  result = _finished(run, name)
  if result is not None:
    return result
  hp = ppo_hparams(run.agents, run.agents.search_updates)
  trainer, macs = a2d.search_trainer(
      run.env, run.space, run.agents, search_dnas_config(run.config), hp,
      run.teacher if weights.distills else None, weights, run.teacher_macs,
      depthwise_impl=run.config.supernet.depthwise_impl)
  state, info = run.train(name, trainer, hp.num_updates,
                          teacher_params if weights.distills else None)
  genotype, alphas = a2d.derive(run.space, state.params)
  result = dict(info, genotype=genotype, alphas=[a.tolist() for a in alphas],
                weights=dataclasses.asdict(weights),
                expected_macs=float(macs.of_alphas(alphas)),
                supernet_params=supernet_lib.count_params(state.params))
  workdir_lib.write_json(run.phase_path(name), result)
  return result


def retrain_phase(run: A2DRun, name: str, agent, weights: a2d.A2DWeights,
                  teacher_params) -> dict:
  """`agent` trained from scratch (distilling where `weights` say) and evaluated."""
  result = _finished(run, name)
  if result is not None:
    return result
  hp = ppo_hparams(run.agents, run.agents.retrain_updates)
  trainer = a2d.retrain_trainer(run.env, agent, hp, run.teacher if weights.distills else None,
                                weights)
  state, info = run.train(name, trainer, hp.num_updates,
                          teacher_params if weights.distills else None)
  result = dict(info, distilled=weights.distills, **run.evaluate(trainer, state.params, name))
  workdir_lib.write_json(run.phase_path(name), result)
  return result


def targets(agents: dict, found: str = "a2d") -> dict:
  """A2D's claims on agents {name: {"mean_return", "macs"}} (one run's, or
  means over runs): the return of agent `found` against the teacher's, its
  multiply-adds against the teacher's, and it against plain DNAS (`dnas`,
  where there is one)."""
  teacher, found = agents["teacher"], agents[found]
  out = {"return_fraction_of_teacher": (found["mean_return"] / teacher["mean_return"]
                                        if teacher["mean_return"] else None),
         "macs_fraction_of_teacher": found["macs"] / teacher["macs"]}
  out["at_least_90pct_return_at_most_half_macs"] = bool(
      out["return_fraction_of_teacher"] is not None and out["return_fraction_of_teacher"] >= 0.9
      and out["macs_fraction_of_teacher"] <= 0.5)
  if "dnas" in agents:
    out["above_plain_dnas"] = bool(found["mean_return"] > agents["dnas"]["mean_return"])
  return out


def run_search(config, workdir) -> dict:
  """`mode=search`, `method=a2d` (`config` checked by the caller)."""
  started = time.perf_counter()
  path = workdir_lib.prepare(workdir)
  workdir_lib.write_json(path / "config.json", config.to_dict())
  config, options = performance.start_run(config)
  writer = metrics_lib.MetricWriter(path / "tensorboard", path / "metrics.jsonl")
  run = A2DRun.create(config, path, writer)
  env, space, ac = run.env, run.space, config.agents
  try:
    teacher_params, teacher_result = teacher_phase(run)
    weights = a2d_weights(ac)
    no_distill = dataclasses.replace(weights, actor=0.0, critic=0.0)
    searches = {"a2d_search": search_phase(run, "a2d_search", weights, teacher_params)}
    found = a2d.derived_agent(space, searches["a2d_search"]["genotype"], ac, env.num_actions,
                              depthwise_impl=config.supernet.depthwise_impl)
    agents = {"teacher": teacher_result,
              "a2d": retrain_phase(run, "a2d", found, weights, teacher_params)}
    if ac.undistilled:
      agents["a2d_plain"] = retrain_phase(run, "a2d_plain", found, no_distill, None)
    if ac.baselines:
      searches["dnas_search"] = search_phase(run, "dnas_search", no_distill, None)
      plain = a2d.derived_agent(space, searches["dnas_search"]["genotype"], ac, env.num_actions,
                                depthwise_impl=config.supernet.depthwise_impl)
      agents["dnas"] = retrain_phase(run, "dnas", plain, no_distill, None)
      small = networks.ActorCritic(small_torso(agents["a2d"]["macs"], env), env.num_actions)
      agents["small"] = retrain_phase(run, "small", small, no_distill, None)
  finally:
    writer.close()
  genotype = searches["a2d_search"]["genotype"]
  summary = {
      "method": "a2d", "mode": "single_level", "space": space.name, "env": env.name,
      "dataset": env.name, "seed": int(config.seed), "genotype": genotype,
      "agents": agents, "searches": searches, "targets": targets(agents),
      "teacher_macs": run.teacher_macs,
      "choice_points": [cp.name for cp in space.choice_points],
      "space_ops": list(space.op_names),
      "subspace": [list(a) for a in space.full_subspace()],
      "alphas": searches["a2d_search"]["alphas"],
      "search_seconds": time.perf_counter() - started,
      "performance_options": options, "devices": jax.device_count(),
  }
  workdir_lib.write_json(path / "genotype.json", genotype)
  workdir_lib.write_json(path / "summary.json", summary)
  report.write_report(path)
  return summary


def describe(config) -> dict:
  """`mode=describe` for `task=agents`: the environment, the agent space and
  supernet, and the multiply-adds of the teacher and of derived agents."""
  config, options = performance.resolve(config)
  env = envs.make_env(config.agents.env)
  space = spaces_lib.space_from_config(config.space)
  net = agent_supernet.build_agent_supernet(space, space.full_subspace(), config.agents,
                                            env.num_actions,
                                            depthwise_impl=config.supernet.depthwise_impl)
  macs = agent_supernet.AgentMacs.of(net, env.obs_shape)
  per_edge = [min(costs) for costs in macs.per_op], [max(costs) for costs in macs.per_op]
  return {
      "method": config.method, "env": env.name, "observation_shape": list(env.obs_shape),
      "num_actions": env.num_actions, "space": space.name,
      "space_ops": list(space.op_names),
      "choice_points": [cp.name for cp in space.choice_points],
      "cells": int(config.agents.cells), "channels": int(config.agents.channels),
      "features": int(config.agents.features),
      "supernet_weights": supernet_lib.count_params(
          supernet_lib.param_shapes(net, env.obs_shape)),
      "teacher_macs": agent_supernet.agent_macs(networks.hand_designed_agent(env),
                                                env.obs_shape),
      "derived_macs_min": macs.fixed + macs.cells * sum(per_edge[0]),
      "derived_macs_max": macs.fixed + macs.cells * sum(per_edge[1]),
      "performance_options": options,
  }
