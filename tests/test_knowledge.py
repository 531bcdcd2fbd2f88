"""Architecture knowledge carried between searches (radars_jax.radars.knowledge):
the critic predicts for the new space what it predicted for the old where
their choice points and ops share names, the policy becomes the prior,
and a new search started with `controller.transfer_from` begins there."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import checkpointing
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from radars_jax.nas import spaces
from radars_jax.radars import controller as ctrl
from radars_jax.radars import critic
from radars_jax.radars import knowledge
from radars_jax.radars import loop as radars_loop

import test_radars

SOURCE = (("e0", ("a", "b", "c")), ("e1", ("a", "b", "c")))
# e1's ops reordered, one of them new; e0's ops unchanged; a new edge e2
TARGET = (("e0", ("a", "b", "c", "d")), ("e1", ("c", "a", "d", "b")),
          ("e2", ("a", "b", "c", "d")))


def trained_controller(names, seed=0, hidden=(8, 8), members=3):
  """A controller over `names` with random logits, critic and reward scale
  (as if trained)."""
  config = ctrl.default_controller_config()
  config.critic_hidden, config.critic_members = hidden, members
  max_ops = max(len(ops) for _, ops in names)
  state = ctrl.init_controller(jax.random.key(seed), len(names), max_ops, config)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda p: p + rng.normal(0, 0.3, p.shape).astype(p.dtype),
                                  state.critic_params)
  return state.replace(logits=jnp.asarray(rng.normal(0, 1, state.logits.shape), jnp.float32),
                       critic_params=params, reward_mean=jnp.float32(0.7),
                       reward_std=jnp.float32(0.2))


def fresh_controller(names, hidden=(8, 8), members=3):
  config = ctrl.default_controller_config()
  config.critic_hidden, config.critic_members = hidden, members
  max_ops = max(len(ops) for _, ops in names)
  return ctrl.init_controller(jax.random.key(5), len(names), max_ops, config)


def predictions(state, ops):
  x = critic.multi_hot(jnp.asarray(ops, jnp.int32), state.logits.shape[-1])
  return np.asarray(critic.member_predictions(state, x))


def test_the_critic_predicts_for_shared_ops_what_it_predicted_before():
  source = trained_controller(SOURCE)
  carried = knowledge.carry(knowledge.from_state(source, SOURCE), fresh_controller(TARGET),
                            TARGET, policy=False)
  # subspaces of 2 ops per edge in the source: e0 {a, c}, e1 {b, c}
  before = predictions(source, [[[0, 2], [1, 2]]])
  # the same ops in the target's indices, plus anything on the new edge e2
  # and the new op d (their rows start at zero: they add nothing)
  after = predictions(carried, [[[0, 2, 3], [3, 0, -1], [0, 1, 3]]])
  assert not np.allclose(predictions(fresh_controller(TARGET), [[[0, 2, 3], [3, 0, -1],
                                                                 [0, 1, 3]]]), before)
  chex.assert_trees_all_close(after, before, rtol=1e-5)
  # the policy was not asked for: it stays uniform
  chex.assert_trees_all_equal(np.asarray(carried.logits), np.zeros((3, 4), np.float32))


def test_the_policy_becomes_the_prior_and_unknown_ops_are_neutral():
  source = trained_controller(SOURCE)
  carried = knowledge.carry(knowledge.from_state(source, SOURCE), fresh_controller(TARGET),
                            TARGET, policy=True)
  src = np.asarray(jax.nn.softmax(source.logits, -1))
  new = np.asarray(jax.nn.softmax(carried.logits, -1))
  # e1 in the target orders its ops c, a, d, b: the known ones keep their odds
  known = new[1, [0, 1, 3]]
  chex.assert_trees_all_close(known / known.sum(), src[1, [2, 0, 1]] / src[1].sum(),
                              rtol=1e-5)
  # an unknown op gets the mean logit of the known ones at its edge
  logits = np.asarray(carried.logits)
  chex.assert_trees_all_close(logits[0, 3], logits[0, :3].mean(), atol=1e-6)
  chex.assert_trees_all_close(logits[2], np.zeros(4), atol=1e-6)   # a new edge: uniform


def test_nothing_shared_or_another_critic_shape_is_one_line():
  source = knowledge.from_state(trained_controller(SOURCE), SOURCE)
  other = (("x", ("p", "q")),)
  with pytest.raises(UserError, match="shares no"):
    knowledge.carry(source, fresh_controller(other), other, policy=True)
  with pytest.raises(UserError, match="critic_hidden"):
    knowledge.carry(source, fresh_controller(TARGET, hidden=(16,)), TARGET, policy=False)
  with pytest.raises(UserError, match="critic_hidden"):
    knowledge.carry(source, fresh_controller(TARGET, members=2), TARGET, policy=False)


def test_a_new_search_starts_from_the_checkpointed_controller_of_another(tmp_path):
  """A workdir whose search checkpoint holds a trained controller (over
  NB-201's ops) is read back without its template, and a new search on a
  space of fewer ops starts from it; a resumed search keeps its own."""
  space = spaces.make_space("nb201")
  names = knowledge.space_names(space)
  config = test_radars.tiny_config("rl")
  config.controller.critic_hidden = (8, 8)
  source_state = trained_controller(names, hidden=(8, 8),
                                    members=int(config.controller.critic_members))
  source_dir = tmp_path / "source"
  workdir_lib.prepare(source_dir)
  workdir_lib.write_json(source_dir / "config.json", config.to_dict())
  with checkpointing.Checkpointer(source_dir / "checkpoints" / "search") as ckpt:
    ckpt.save(3, {"pool": {"w": np.ones(3, np.float32)}, "controller": source_state,
                  "key": jax.random.key(1)})
  config.controller.transfer_from = str(source_dir)
  config.controller.transfer_policy = True
  config.space.ops = "none,skip_connect,nor_conv_3x3"   # a smaller space
  small = spaces.space_from_config(config.space)
  search = radars_loop.RadarsSearch(config, workdir_lib.prepare(tmp_path / "new"), small)
  state, record = search.restore()
  assert record.iteration == 0
  expected = knowledge.carry(knowledge.from_state(source_state, names),
                             radars_loop.fresh_state(small, search.config,
                                                     *search.task.full_pool()).controller,
                             knowledge.space_names(small), policy=True)
  chex.assert_trees_all_close(jax.device_get(state.controller.critic_params),
                              jax.device_get(expected.critic_params))
  chex.assert_trees_all_close(np.asarray(state.controller.logits), np.asarray(expected.logits))
  # the NB-201 op indices of the kept ops: their odds as the source had them
  full = np.asarray(jax.nn.softmax(source_state.logits, -1))[:, [0, 1, 3]]
  kept = np.asarray(jax.nn.softmax(state.controller.logits, -1))
  chex.assert_trees_all_close(kept, full / full.sum(-1, keepdims=True), rtol=1e-5)
  search.ckpt.close()


def test_transfer_from_a_directory_that_is_no_search_is_one_line(tmp_path):
  from radars_jax import config_check  # pylint: disable=import-outside-toplevel
  config = test_radars.tiny_config("rl")
  config.controller.transfer_from = str(tmp_path)
  with pytest.raises(UserError, match="transfer_from.*no config.json"):
    config_check.check_config(config)
  config.method = "single_darts"
  with pytest.raises(UserError, match="not method=single_darts"):
    config_check.check_config(config)
  (tmp_path / "config.json").write_text("{}")
  config.method = "rl"
  config_check.check_config(config)
  with pytest.raises(UserError, match="no RADARS/rl/random search"):
    knowledge.load_source(str(tmp_path))
