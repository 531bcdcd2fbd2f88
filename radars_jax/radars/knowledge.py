"""Architecture knowledge carried from one search into another (FNAS).

What a finished or interrupted search has learned about architectures
lives in its controller: the critic ensemble (reward predicted from a
subspace's multi-hot encoding) and the policy's logits. `carry` puts them
into a new search's fresh controller, matching choice points and ops by
name, so the two searches may differ in dataset, budget, or ops:
  * the critic: every member's first layer has one input row per (choice
    point, op); a row of a (choice point, op) the source knew is copied,
    the row of one it did not know is zero (the op adds nothing to the
    prediction until the new search trains it); the deeper layers and the
    reward standardisation are copied whole. Where the members agree on a
    subspace the carried prediction is trusted (the `uncertainty` modes
    scale its advantages by the ensemble's spread, `radars.ppo`);
  * the policy (`controller.transfer_policy`): the logits of known ops are
    copied, each choice point shifted to mean zero over them; an unknown op
    gets that choice point's mean (zero), a neutral prior.
The replay buffer and the optimisers' states start afresh: their samples
and moments belong to the other search's rewards.

`--config.controller.transfer_from=WORKDIR` names the source: any workdir of
`method=radars|rl|random` with a checkpoint (`load_source`). The table
mode carries a controller state it holds in memory (`ControllerKnowledge`
of `from_state`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from radars_jax import checkpointing
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from radars_jax.nas import spaces as spaces_lib
from radars_jax.radars.controller import ControllerState

# (choice point name, its op names in index order), one per choice point
Names = tuple[tuple[str, tuple[str, ...]], ...]


@dataclasses.dataclass(frozen=True)
class ControllerKnowledge:
  """The parts of a controller that carry: logits [C, M], the critic's
  parameters ({key path: array}, each with a leading [members] axis), its
  reward standardisation, and the names of the choice points and ops its
  rows stand for."""
  names: Names
  logits: np.ndarray
  critic_leaves: dict[str, np.ndarray]
  reward_mean: float
  reward_std: float


def space_names(space: spaces_lib.SearchSpace) -> Names:
  return tuple((cp.name, tuple(cp.ops)) for cp in space.choice_points)


def from_state(state: ControllerState, names: Names) -> ControllerKnowledge:
  host = jax.device_get(state)
  flat, _ = jax.tree_util.tree_flatten_with_path(host.critic_params)
  leaves = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}
  return ControllerKnowledge(names, np.asarray(host.logits), leaves,
                             float(host.reward_mean), float(host.reward_std))


def load_source(workdir: str) -> ControllerKnowledge:
  """The controller of the search in `workdir` (its newest checkpoint),
  with the names of its space (from its config.json)."""
  path = Path(workdir).expanduser()
  config_path = path / "config.json"
  search_dir = path / "checkpoints" / "search"
  if not config_path.is_file() or not search_dir.is_dir():
    raise UserError(f"controller.transfer_from={workdir!r} holds no RADARS/rl/random search "
                    "(config.json and checkpoints/search)")
  source_config = workdir_lib.read_json(config_path)
  source_space = source_config["space"]
  space = spaces_lib.make_space(source_space["name"], source_space["ops"], source_space["num_ops"],
                                blocks=source_space.get("blocks"))
  with checkpointing.Checkpointer(search_dir) as ckpt:
    read = ckpt.restore_latest()
  if read is None:
    raise UserError(f"controller.transfer_from={workdir!r} has no checkpoint yet")
  _, arrays, _ = read
  prefix = "['controller']"
  critic = {path[len(prefix + ".critic_params"):]: value for path, value in arrays.items()
            if path.startswith(prefix + ".critic_params")}
  return ControllerKnowledge(space_names(space), arrays[prefix + ".logits"], critic,
                             float(arrays[prefix + ".reward_mean"]),
                             float(arrays[prefix + ".reward_std"]))


def matches(source: Names, target: Names) -> list[tuple[int, int, int, int]]:
  """(target choice point, target op, source choice point, source op) of
  every (choice point, op) both name."""
  where = {(cp, op): (c, o) for c, (cp, ops) in enumerate(source) for o, op in enumerate(ops)}
  return [(c, o, *where[(cp, op)]) for c, (cp, ops) in enumerate(target)
          for o, op in enumerate(ops) if (cp, op) in where]


def carry(knowledge: ControllerKnowledge, state: ControllerState, names: Names,
          policy: bool) -> ControllerState:
  """`state` (a fresh controller over `names`) with `knowledge`'s critic,
  and with `policy` its logits (see the module's docstring)."""
  pairs = matches(knowledge.names, names)
  if not pairs:
    raise UserError("controller.transfer_from: its search space shares no (choice point, "
                    "op) with this one; nothing to carry")
  target_max = state.logits.shape[-1]
  source_max = knowledge.logits.shape[-1]
  rows_t = np.array([c * target_max + o for c, o, _, _ in pairs])
  rows_s = np.array([c * source_max + o for _, _, c, o in pairs])
  source = knowledge.critic_leaves
  flat, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(state.critic_params))
  first_kernel = "['params']['Dense_0']['kernel']"
  leaves = []
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    value = source.get(name)
    if (name == first_kernel and value is not None and value.shape[0] == leaf.shape[0]
        and value.shape[-1] == leaf.shape[-1]):   # the same members and width
      kernel = np.zeros(leaf.shape, leaf.dtype)
      kernel[:, rows_t] = value[:, rows_s]
      value = kernel
    if value is None or value.shape != leaf.shape:
      raise UserError(f"controller.transfer_from: its critic has another shape ({name}); "
                      "give this search the same controller.critic_hidden and critic_members")
    leaves.append(np.asarray(value, leaf.dtype))
  out = state.replace(critic_params=jax.tree_util.tree_unflatten(treedef, leaves),
                      reward_mean=np.float32(knowledge.reward_mean),
                      reward_std=np.float32(knowledge.reward_std))
  if policy:
    logits = np.zeros(state.logits.shape, np.float32)
    known = np.zeros(state.logits.shape, bool)
    for c, o, cs, os_ in pairs:
      logits[c, o], known[c, o] = knowledge.logits[cs, os_], True
    counts = np.maximum(known.sum(-1, keepdims=True), 1)
    logits = np.where(known, logits - (logits * known).sum(-1, keepdims=True) / counts, 0.0)
    out = out.replace(logits=logits.astype(np.float32))
  return out
