"""The agent search space: a cell supernet as an actor-critic's torso.

    space = spaces.make_space("nb201", ops="none,skip_connect,nor_conv_1x1,...")
    net = build_agent_supernet(space, space.full_subspace(), config.agents, num_actions=3)
    logits, value = net.apply({"params": w}, obs, alphas)

`AgentSupernet`: a 3x3 stem convolution, `cells` NAS-Bench-201 search cells
(`radars_jax.nas.cells`, the image search's cells, mixed ops and op registry;
one set of alphas shared by every cell, as in the image supernets), then
ReLU, the features flattened (MinAtar's positions matter: no pooling), one
dense layer of `features` units and the two heads of `networks.ActorCritic`:
policy logits and a value. Observations are images [..., H, W, C] such as
MinAtar's 10x10xC; the cells keep their size. Built on a subspace with
`alphas=None` and one op per edge, it is the derived agent.

`SearchAgent` holds a supernet and its alphas as parameters of one module
(`alpha_<c>` beside `supernet`), so that PPO (`agents.ppo`) trains both:
`split_params` tells them apart for the optimisers.

Multiply-adds (`AgentMacs`): those of every convolution and dense layer for
one observation, the convention of `retrain.networks.count_macs`. Every
edge of the torso sees a [H, W, channels] state, so an op costs the same on
every edge; the expected multiply-adds under the alphas' softmax,
`AgentMacs.expected`, is differentiable and equals the derived agent's
count when the op weights are one-hot (tests/test_a2d.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from radars_jax.agents.networks import orthogonal_dense
from radars_jax.errors import UserError
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas.cells import EdgeModes, NB201SearchCell, check_slots
from radars_jax.nas.mixed_ops import mixing_weights
from radars_jax.nas.ops import BatchNorm, OpSettings
from radars_jax.nas.supernet import _cell_modes
from radars_jax.retrain import networks as retrain_networks

# Normalisation: each observation's own statistics (a layer norm per
# example), no affine parameters in the ops; the stem's has its scale and
# bias. Batch statistics would make one observation's action depend on the
# others of its batch: 64 evaluation episodes started together see nearly
# the same frames, and a batch-normalised agent scored far below its
# training returns (docs/performance.md).
AGENT_OP_SETTINGS = OpSettings(pool_bn=False, per_example_norm=True)


class AgentSupernet(EdgeModes):
  """obs [B, H, W, C] -> (policy logits [B, num_actions], value [B])."""
  edge_ops: tuple[tuple[str, ...], ...]
  num_actions: int
  channels: int      # (the sizes: config.agents, `build_agent_supernet`)
  cells: int
  features: int
  settings: OpSettings = AGENT_OP_SETTINGS

  @nn.compact
  def __call__(self, obs, alphas=None, train: bool = True, op_scales=None, slots=None):
    check_slots(self, slots)
    weights = mixing_weights(alphas, op_scales, slots)
    x = nn.Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                name="stem_conv")(obs)
    x = BatchNorm(dataclasses.replace(AGENT_OP_SETTINGS, affine=True), name="stem_bn")(x, train)
    for i in range(self.cells):
      x = NB201SearchCell(self.edge_ops, self.channels, self.settings,
                          **_cell_modes(self, self.slot_orders), name=f"cell_{i}")(
                              x, weights, train, slots)
    x = ops_lib.relu(x).reshape(x.shape[0], -1)
    x = nn.relu(orthogonal_dense(self.features)(x))
    logits = orthogonal_dense(self.num_actions, 0.01)(x)
    value = orthogonal_dense(1, 1.0)(x)[..., 0]
    return logits, value


def check_agent_space(space: spaces_lib.SearchSpace) -> None:
  if space.kind != "nb201_cell":
    raise UserError(f"the agent torso stacks NAS-Bench-201 cells: space {space.name!r} does "
                    "not fit it; set space.name=nb201 (space.ops picks the candidate ops)")


def build_agent_supernet(space: spaces_lib.SearchSpace, subspace: spaces_lib.Subspace | None,
                         agents_config: Any, num_actions: int, switched: bool = False,
                         slot_orders=None, depthwise_impl: str = "xla") -> AgentSupernet:
  """The agent supernet of `space` restricted to `subspace` (as
  `nas.supernet.build_supernet`; `agents_config`: `channels`, `cells`,
  `features`; `depthwise_impl`: `radars_jax.nas.depthwise`)."""
  check_agent_space(space)
  if switched:
    if subspace is not None:
      raise ValueError("a switched supernet holds the whole space: pass subspace=None")
    subspace = space.full_subspace()
  subspace = space.check_subspace(subspace, allow_empty=True)
  if slot_orders is not None:
    slot_orders = tuple(tuple(int(o) for o in order) for order in slot_orders)
  return AgentSupernet(space.op_names_of(subspace), num_actions,
                       channels=int(agents_config.channels), cells=int(agents_config.cells),
                       features=int(agents_config.features),
                       settings=dataclasses.replace(AGENT_OP_SETTINGS,
                                                    depthwise_impl=depthwise_impl),
                       switched=switched, slot_orders=slot_orders)


class SearchAgent(nn.Module):
  """A supernet and its alphas (`alpha_<c>`: one vector over the active
  ops of choice point c, DARTS's 1e-3 * N(0, 1) at first) in one module:
  obs -> (logits, value)."""
  supernet: AgentSupernet
  alpha_sizes: tuple[int, ...]
  alpha_init_scale: float = 1e-3

  @nn.compact
  def __call__(self, obs):
    alphas = [self.param(f"alpha_{c}", nn.initializers.normal(self.alpha_init_scale), (n,))
              for c, n in enumerate(self.alpha_sizes)]
    return self.supernet(obs, alphas)


def search_agent(supernet: AgentSupernet, subspace: spaces_lib.Subspace,
                 alpha_init_scale: float = 1e-3) -> SearchAgent:
  return SearchAgent(supernet, tuple(len(active) for active in subspace), alpha_init_scale)


def is_alpha(path: Sequence[str]) -> bool:
  return str(path[0]).startswith("alpha_")


def param_labels(params) -> Any:
  """A tree like a `SearchAgent`'s params: "alphas" or "weights" per leaf
  (for `optax.multi_transform`)."""
  return {name: jax.tree_util.tree_map(lambda _, n=name: "alphas" if is_alpha([n]) else "weights",
                                       value)
          for name, value in params.items()}


def split_params(params) -> tuple[Any, tuple[jax.Array, ...]]:
  """(supernet weights, alphas in choice-point order) of a `SearchAgent`."""
  alphas = sorted((int(name.split("_")[1]), v) for name, v in params.items() if is_alpha([name]))
  return params["supernet"], tuple(v for _, v in alphas)


# ---------------------------------------------------------------------------
# Multiply-adds
# ---------------------------------------------------------------------------

def _op_macs(name: str, channels: int, obs_hw: Sequence[int]) -> int:
  """Multiply-adds of op `name` on one [H, W, channels] state (stride 1)."""
  if name == "none":
    return 0
  # (XLA's convolutions: a depthwise one counted as one, whatever kernel trains it)
  op = ops_lib.make_op(name, channels, 1, AGENT_OP_SETTINGS, unbound=True)
  x = jax.ShapeDtypeStruct((1, *obs_hw, channels), jnp.float32)
  variables = jax.eval_shape(lambda x: op.init(jax.random.key(0), x, False), x)
  closed = jax.make_jaxpr(lambda v, x: op.apply(v, x, False))(variables, x)
  return retrain_networks._jaxpr_macs(closed.jaxpr)   # pylint: disable=protected-access


def agent_macs(agent: nn.Module, obs_shape: Sequence[int], *args) -> int:
  """Multiply-adds of one observation through `agent` (any actor-critic or
  supernet; `args` after the observation, e.g. alphas), nothing computed."""
  if isinstance(agent, AgentSupernet):   # (convolutions counted as XLA's)
    agent = agent.clone(settings=dataclasses.replace(agent.settings, depthwise_impl="xla"))
  x = jax.ShapeDtypeStruct((1, *obs_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: agent.init(jax.random.key(0), x, *args), x)
  closed = jax.make_jaxpr(lambda v, x: agent.apply(v, x, *args))(variables, x)
  return retrain_networks._jaxpr_macs(closed.jaxpr)   # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class AgentMacs:
  """The multiply-adds of an agent supernet's derived agents: `fixed` (stem,
  dense layer, heads) plus, per cell and edge, the cost of its op
  (`per_op[c][i]`: op i of choice point c's active list)."""
  fixed: int
  per_op: tuple[tuple[int, ...], ...]
  cells: int

  @classmethod
  def of(cls, supernet: AgentSupernet, obs_shape: Sequence[int]) -> "AgentMacs":
    """Counted from the traced ops: each active op once on its own, and the
    supernet with no op on any edge for the rest."""
    hw = tuple(obs_shape[:2])
    cache: dict[str, int] = {}
    per_op = tuple(tuple(cache.setdefault(n, _op_macs(n, supernet.channels, hw)) for n in ops)
                   for ops in supernet.edge_ops)
    bare = supernet.clone(edge_ops=tuple(("none",) for _ in supernet.edge_ops), switched=False,
                          slot_orders=None, settings=AGENT_OP_SETTINGS, parent=None)
    return cls(agent_macs(bare, obs_shape), per_op, supernet.cells)

  def expected(self, op_weights) -> jax.Array:
    """E[multiply-adds] under per-choice-point op weights (the softmax of
    the alphas; traceable and differentiable)."""
    edges = sum(jnp.dot(w, jnp.asarray(costs, jnp.float32))
                for w, costs in zip(op_weights, self.per_op))
    return self.fixed + self.cells * edges

  def of_alphas(self, alphas) -> jax.Array:
    return self.expected([jax.nn.softmax(a) for a in alphas])
