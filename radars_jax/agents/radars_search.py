"""RADARS on the agent space (`task=agents`, `method=radars`): the RADARS
loop (`radars_jax.radars.loop`: the memory budget and cost model, the
controller, pruning, the weight pool, checkpoints after every sample) of
`AgentTask` (a `radars_jax.radars.tasks.SearchTask`), A2D inside each
subspace.

    python -m radars_jax.main --config configs/minatar_radars.py --workdir runs/radars_agents

What differs from the image search:
- first the teacher (`agents.run.teacher_phase`: trained, or loaded from
  `agents.teacher`);
- a subspace is searched by A2D (`agents.a2d`: single-level DNAS on PPO
  rollouts, the teacher's actor and critic distilled, the expected
  multiply-adds costed) for `agents.subspace_updates` PPO updates,
  warm-started from the weight pool;
- its reward is the mean return of its derived agent over
  `agents.reward_episodes` episodes, as a fraction of the teacher's: the
  agent runs on the supernet's weights, each kept op scaled by its softmax
  weight (as the image search scores a derived cell);
- the budget bounds the bytes of a subspace's compiled PPO update (its
  rollout and every minibatch's gradient step), read from XLA as for
  images; the cost model traces the agent supernet's ops at the
  minibatch's size; every subspace compiles its own update (no shared
  program), the next ones in the background while one trains
  (`radars.compile_ahead`);
- the final search over what survives runs `agents.search_updates`
  updates; its derived agent is retrained from scratch with distillation
  (`agents.retrain_updates`, phase `radars`) and evaluated on
  `agents.eval_episodes` episodes beside the teacher.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.agents import a2d
from radars_jax.agents import ppo
from radars_jax.agents import run as agents_run
from radars_jax.agents import supernet as agent_supernet
from radars_jax.dnas import steps as dnas_steps
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib
from radars_jax.nas import weight_pool as pool_lib
from radars_jax.radars import compile_queue as queue_lib
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import loop
from radars_jax.radars import programs
from radars_jax.radars import tasks


class InheritedAgent(nn.Module):
  """A derived agent on its supernet's weights: each kept op scaled by its
  softmax weight there (`op_scales`), so the agent sees activations of the
  scale it was trained with. Its params: {"supernet": ...}."""
  supernet: agent_supernet.AgentSupernet
  op_scales: tuple[tuple[float, ...], ...]

  @nn.compact
  def __call__(self, obs):
    scales = tuple(jnp.asarray(s, jnp.float32) for s in self.op_scales)
    return self.supernet(obs, None, op_scales=scales)


class AgentSubspaceSearch:
  """A2D in one subspace of the agent space: its PPO update compiled ahead
  (for its bytes) and run, and its derived agent scored. Has what the
  loop's programs (`radars.programs.LoopPrograms`) and summary read of an
  image `Searcher`: `space`, `switched` (False: no shared programs), `mode`."""
  mode = "single_level"
  switched = False

  def __init__(self, run: agents_run.A2DRun, teacher_params, teacher_result: dict):
    self.run, self.space = run, run.space
    self.teacher_params, self.teacher_result = teacher_params, teacher_result
    self.teacher_return = float(teacher_result["mean_return"])
    self.weights = agents_run.a2d_weights(run.agents)
    self.dnas_config = agents_run.search_dnas_config(run.config)
    self.depthwise_impl = run.config.supernet.depthwise_impl

  def trainer(self, subspace, updates: int) -> tuple[ppo.PPO, agent_supernet.AgentMacs]:
    run = self.run
    return a2d.search_trainer(run.env, self.space, run.agents, self.dnas_config,
                              agents_run.ppo_hparams(run.agents, updates), run.teacher,
                              self.weights, run.teacher_macs,
                              depthwise_impl=self.depthwise_impl, subspace=subspace)

  def compile_update(self, subspace, updates: int,
                     bytes_only: bool = False) -> dnas_steps.CompiledStep:
    """The PPO update of `subspace`'s search (a run of `updates`: the
    learning rate's schedule is compiled in), compiled on abstract inputs;
    refused (`dnas.ProgramTooLarge`) over `dnas.max_program_ops`."""
    trainer, _ = self.trainer(subspace, updates)
    return dnas_steps.compile_ahead(jax.jit(trainer.update_fn),
                                    (trainer.abstract_state(self.teacher_params),),
                                    self.run.config.dnas.max_program_ops, bytes_only)

  def search(self, subspace, updates: int, key: jax.Array, pool: pool_lib.WeightPool,
             name: str, compiled: dnas_steps.CompiledStep, checkpoint) -> tuple[object, dict]:
    """A2D in `subspace` for `updates` PPO updates on `compiled`, from
    `pool`'s weights (resumed from and saved to `checkpoint`): (the
    supernet's weights, {genotype, alphas, mean_return, return_fraction,
    expected and derived multiply-adds, steps})."""
    run = self.run
    trainer, macs = self.trainer(subspace, updates)

    def from_pool(params):
      return dict(params, supernet=pool.select(jax.device_get(params["supernet"])))

    state, _ = ppo.train(trainer, key, updates, checkpoint_dir=checkpoint,
                         checkpoint_every=int(run.agents.checkpoint_every), writer=run.writer,
                         progress=bool(run.config.progress_bar), constants=self.teacher_params,
                         name=name, warm_start=from_pool,
                         compiled_update=compiled.fn)
    genotype, alphas = a2d.derive(self.space, state.params, subspace)
    weights = agent_supernet.split_params(state.params)[0]
    chosen = spaces_lib.genotype_subspace(self.space, genotype)
    derived = agent_supernet.build_agent_supernet(self.space, chosen, run.agents,
                                                  run.env.num_actions,
                                                  depthwise_impl=self.depthwise_impl)
    evaluated = self.score(derived, chosen, weights, subspace, alphas,
                           jax.random.fold_in(key, 1))
    fraction = (evaluated["mean_return"] / self.teacher_return if self.teacher_return > 0
                else evaluated["mean_return"])
    return weights, {
        "genotype": genotype, "alphas": [a.tolist() for a in alphas],
        "mean_return": evaluated["mean_return"], "return_fraction": float(fraction),
        "expected_macs": float(macs.of_alphas(alphas)),
        "derived_macs": agent_supernet.agent_macs(derived, run.env.obs_shape),
        "steps": updates}

  def score(self, model: agent_supernet.AgentSupernet, chosen, weights, subspace, alphas,
            key: jax.Array) -> dict:
    """`ppo.PPO.evaluate` of the derived agent `model` (the supernet of the
    one-op-per-edge subspace `chosen`) on the supernet's `weights`
    (`InheritedAgent`: each op scaled by its softmax weight under `alphas`
    over `subspace`) over `agents.reward_episodes` episodes."""
    run = self.run
    probs = spaces_lib.op_weights(self.space, subspace, alphas)
    scales = tuple(tuple(float(probs[c, o]) for o in ops) for c, ops in enumerate(chosen))
    template = supernet_lib.param_shapes(model, run.env.obs_shape)
    inherited = pool_lib.restack(pool_lib.canonical(jax.device_get(weights)), template)
    evaluator = ppo.PPO(run.env, InheritedAgent(model, scales),
                        agents_run.ppo_hparams(run.agents, 1))
    return evaluator.evaluate({"supernet": inherited}, key,
                              num_episodes=int(run.agents.reward_episodes))


class AgentPrograms(programs.LoopPrograms):
  """The loop's programs for agents: a subspace's static program is its
  PPO update (`AgentSubspaceSearch.compile_update`)."""

  def compile_static_now(self, subspace, steps: int, bytes_only: bool = False):
    return self.searcher.compile_update(subspace, steps, bytes_only)


@dataclasses.dataclass(frozen=True)
class AgentSizing(programs.Sizing):
  """`programs.Sizing` whose runs are counted in PPO updates: a sample's
  `agents.subspace_updates`, the final search's `agents.search_updates`."""

  def run_steps(self) -> int:
    return int(self.config.agents.subspace_updates)

  def final_steps(self) -> int:
    return int(self.config.agents.search_updates)


class AgentTask:
  """The agent space as a RADARS task (`radars_jax.radars.tasks`; see the
  module's docstring)."""
  score_fields = ("mean_return", "return_fraction")

  def __init__(self, config, path: Path, space: spaces_lib.SearchSpace, mesh, writer,
               time_limit=None):
    # (one device: the agents' PPO runs unsharded; the time limit stops the
    # loop between samples, not inside a subspace's PPO)
    del mesh, time_limit
    self.config, self.space = config, space
    self.run = agents_run.A2DRun.create(config, path, writer)
    self.name = self.run.env.name
    # set by `build`
    self.searcher: AgentSubspaceSearch | None = None
    self.sizing: AgentSizing | None = None

  def supernet(self, subspace) -> agent_supernet.AgentSupernet:
    run = self.run
    return agent_supernet.build_agent_supernet(
        self.space, subspace, run.agents, run.env.num_actions,
        depthwise_impl=self.config.supernet.depthwise_impl)

  def full_pool(self) -> tuple[dict, dict]:
    return tasks.zero_pool(self.supernet(self.space.full_subspace()), self.space,
                           self.run.env.obs_shape)

  def trace_cost_model(self) -> cost_lib.CostModel:
    a = self.run.agents
    minibatch = int(a.num_envs) * int(a.num_steps) // int(a.num_minibatches)
    return tasks.traced_with_progress(
        lambda progress: cost_lib.trace_network_cost_model(
            self.space, self.supernet, self.run.env.obs_shape, minibatch, progress),
        bool(self.config.progress_bar))

  def build(self, model: cost_lib.CostModel,
            budget: float | None) -> tuple[AgentPrograms, AgentSizing]:
    """The teacher (trained, loaded or read back), then the programs that
    search each subspace against it."""
    del model   # (no shared programs: nothing to order)
    teacher_params, teacher_result = agents_run.teacher_phase(self.run)
    self.searcher = AgentSubspaceSearch(self.run, teacher_params, teacher_result)
    self.sizing = AgentSizing(self.config, budget, 1)
    return (AgentPrograms(self.config, self.searcher, budget,
                          queue_lib.CompileQueue(bool(self.config.radars.compile_ahead))),
            self.sizing)

  def search_subspace(self, subspace, key, pool, tag, compiled, checkpoint,
                      final: bool = False) -> tuple[object, dict]:
    updates = self.sizing.final_steps() if final else self.sizing.run_steps()
    weights, fields = self.searcher.search(subspace, updates, key, pool,
                                           tag.replace(" ", "/"), compiled, checkpoint)
    if not final:
      fields = dict(fields, reward=fields["return_fraction"])
      del fields["alphas"]
    return weights, fields

  def finish(self, record) -> dict:
    """The found agent retrained from scratch with distillation and
    evaluated (phase `radars`, resumable) beside the teacher."""
    run, searcher = self.run, self.searcher
    genotype = (record.final or record.best)["genotype"]
    found = a2d.derived_agent(self.space, genotype, run.agents, run.env.num_actions,
                              depthwise_impl=self.config.supernet.depthwise_impl)
    agents = {"teacher": searcher.teacher_result,
              "radars": agents_run.retrain_phase(run, "radars", found,
                                                 agents_run.a2d_weights(run.agents),
                                                 searcher.teacher_params)}
    return {"env": run.env.name, "agents": agents, "teacher_macs": run.teacher_macs,
            "targets": agents_run.targets(agents, found="radars")}


def run_search(config, workdir: str) -> dict:
  """`mode=search`, `task=agents`, `method=radars`: the RADARS loop
  (`radars.loop.run_search`) of `AgentTask`."""
  return loop.run_search(config, workdir, make_task=AgentTask)
