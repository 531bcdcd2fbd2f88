"""A2D (Auto-Agent-Distiller): single-level DNAS of an agent's torso on its
own rollouts, steadied by distilling a trained teacher's actor and critic.

Weights and alphas of a `supernet.SearchAgent` both minimise, on the same
PPO minibatch,

    L = L_PPO + l_actor * KL(pi_teacher || pi_student)
        + l_critic * (V_student - V_teacher)^2 + l_flops * E_alpha[MACs] / MACs_ref

with E_alpha[MACs] the expected multiply-adds of the derived agent under
the alphas' softmax (`supernet.AgentMacs`) and MACs_ref the teacher's (so
l_flops is per teacher-sized agent). With l_actor = l_critic = 0 it is plain
DNAS for agents, the baseline A2D finds fails. Weights use PPO's optimiser,
alphas the image search's (`dnas.steps.alpha_optimizer`: Adam with L2
decay); everything else is `agents.ppo` (one jitted update, resumable).

    trainer, macs = search_trainer(env, space, config.agents, config.dnas, hp, teacher,
                                   A2DWeights(1.0, 0.5, 0.1), teacher_macs)
    state, history = ppo.train(trainer, key, hp.num_updates, constants=teacher_params)
    genotype = derive(space, state.params)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from radars_jax.agents import distill
from radars_jax.agents import ppo
from radars_jax.agents import supernet as agent_supernet
from radars_jax.agents.envs import Environment
from radars_jax.dnas import steps as dnas_steps
from radars_jax.nas import spaces as spaces_lib


@dataclasses.dataclass(frozen=True)
class A2DWeights:
  """The loss's weights: l_actor, l_critic, l_flops."""
  actor: float = 1.0
  critic: float = 0.5
  flops: float = 0.0

  @property
  def distills(self) -> bool:
    return self.actor > 0 or self.critic > 0


def a2d_loss(teacher: nn.Module | None, weights: A2DWeights,
             macs: agent_supernet.AgentMacs | None = None,
             reference_macs: float = 1.0) -> ppo.ExtraLoss:
  """The terms A2D adds to PPO's loss (`ppo.ExtraLoss`; its `constants`:
  the teacher's params). `macs`: the student is a `SearchAgent` whose
  expected multiply-adds are costed (None: a fixed network, no cost term)."""
  if weights.distills and teacher is None:
    raise ValueError("distillation weights need a teacher")

  def extra(params, obs, logits, value, teacher_params):
    loss, metrics = 0.0, {}
    if weights.distills:
      teacher_logits, teacher_value = teacher.apply({"params": teacher_params}, obs)
      loss, metrics = distill.distillation_loss(logits, value, teacher_logits, teacher_value,
                                                weights.actor, weights.critic)
    if macs is not None:
      expected = macs.of_alphas(agent_supernet.split_params(params)[1])
      loss = loss + weights.flops * expected / reference_macs
      metrics["expected_macs"] = expected
    return loss, metrics

  return extra


def search_trainer(env: Environment, space: spaces_lib.SearchSpace, agents_config: Any,
                   dnas_config: Any, hp: ppo.PPOHParams, teacher: nn.Module | None,
                   weights: A2DWeights, reference_macs: float, unroll: bool | None = None,
                   depthwise_impl: str = "xla", subspace: spaces_lib.Subspace | None = None):
  """(the PPO trainer of a `SearchAgent` over `subspace` of `space` (default
  the whole space), its `AgentMacs`)."""
  subspace = space.full_subspace() if subspace is None else subspace
  net = agent_supernet.build_agent_supernet(space, subspace, agents_config,
                                            env.num_actions, depthwise_impl=depthwise_impl)
  agent = agent_supernet.search_agent(net, subspace, float(dnas_config.alpha_init_scale))
  macs = agent_supernet.AgentMacs.of(net, env.obs_shape)
  tx = optax.multi_transform({"weights": ppo.optimizer(hp),
                              "alphas": dnas_steps.alpha_optimizer(dnas_config)},
                             agent_supernet.param_labels)
  extra = a2d_loss(teacher, weights, macs, reference_macs)
  return ppo.PPO(env, agent, hp, unroll=unroll, tx=tx, extra_loss=extra), macs


def retrain_trainer(env: Environment, agent: nn.Module, hp: ppo.PPOHParams,
                    teacher: nn.Module | None, weights: A2DWeights,
                    unroll: bool | None = None) -> ppo.PPO:
  """PPO of a fixed agent from scratch, distilling `teacher` where
  `weights` do (their FLOPs weight is not used: nothing is searched)."""
  extra = a2d_loss(teacher, weights) if weights.distills else None
  return ppo.PPO(env, agent, hp, unroll=unroll, extra_loss=extra)


def derive(space: spaces_lib.SearchSpace, params,
           subspace: spaces_lib.Subspace | None = None) -> tuple[dict, list[np.ndarray]]:
  """(the genotype of a `SearchAgent`'s alphas over `subspace` (default the
  whole space): the strongest op per edge, as NAS-Bench-201's rule; the
  alphas on the host)."""
  subspace = space.full_subspace() if subspace is None else subspace
  alphas = [np.asarray(a) for a in jax.device_get(agent_supernet.split_params(params)[1])]
  return spaces_lib.derive_genotype(space, subspace, alphas), alphas


def derived_agent(space: spaces_lib.SearchSpace, genotype: dict, agents_config: Any,
                  num_actions: int, depthwise_impl: str = "xla") -> agent_supernet.AgentSupernet:
  """The discrete agent of `genotype`: the supernet on one op per edge,
  run without alphas."""
  return agent_supernet.build_agent_supernet(
      space, spaces_lib.genotype_subspace(space, genotype), agents_config, num_actions,
      depthwise_impl=depthwise_impl)
