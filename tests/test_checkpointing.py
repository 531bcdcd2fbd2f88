"""Checkpointer: round trips of mixed pytrees, retention, fallback on corruption."""
import gc
import logging
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import checkpointing
from radars_jax import parallel
from radars_jax.errors import UserError


def _state(seed: int):
  """A pytree with every kind of leaf the trainers store."""
  mesh = parallel.make_mesh()
  rng = np.random.RandomState(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.randn(3, 2), jnp.float32),
                      "bias": jnp.zeros((2,), jnp.float32)}}
  return {
      "params": jax.device_put(params, parallel.replicated(mesh)),
      "opt": (jnp.asarray(rng.randn(4), jnp.float32), [jnp.int32(seed), np.arange(3) + seed]),
      "key": jax.random.key(seed),
      "raw_key": jax.random.PRNGKey(seed),
      "step": 10 * seed,
      "lr": 0.5 * seed,
      "done": bool(seed % 2),
      "history": np.asarray(rng.randn(5), np.float64),
  }


def _assert_same(a, b):
  chex.assert_trees_all_equal_structs(a, b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if hasattr(x, "dtype"):
      assert x.dtype == y.dtype


def test_round_trip_and_retention(tmp_path):
  ckpt = checkpointing.Checkpointer(tmp_path / "ckpt", max_to_keep=2)
  assert ckpt.latest_step() is None
  assert ckpt.restore_latest(_state(0)) is None
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"epoch": step, "note": "x"})
  ckpt.close()

  ckpt = checkpointing.Checkpointer(tmp_path / "ckpt", max_to_keep=2)
  assert ckpt.latest_step() == 3
  assert ckpt.all_steps() == [2, 3]
  step, state, meta = ckpt.restore_latest(_state(0))
  assert step == 3 and meta == {"epoch": 3, "note": "x"}
  _assert_same(state, _state(3))
  # Restored jax arrays keep the template's sharding; the key still works.
  assert state["params"]["dense"]["kernel"].sharding == _state(0)["params"]["dense"]["kernel"].sharding
  chex.assert_trees_all_equal(jax.random.normal(state["key"], (2,)),
                              jax.random.normal(jax.random.key(3), (2,)))
  # An abstract template (eval_shape) restores too.
  step, abstract_state, _ = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  chex.assert_trees_all_equal(abstract_state["params"], state["params"])
  ckpt.close()


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
  directory = tmp_path / "ckpt"
  with checkpointing.Checkpointer(directory) as ckpt:
    ckpt.save(5, _state(5), {"step": 5})
    ckpt.save(6, _state(6), {"step": 6})
  # Corrupt every array file of the latest step.
  corrupted = 0
  for root, _, files in os.walk(directory / "6" / checkpointing.STATE_ITEM):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
        corrupted += 1
  assert corrupted
  with checkpointing.Checkpointer(directory) as ckpt, caplog.at_level(logging.WARNING):
    step, state, meta = ckpt.restore_latest(_state(0))
    assert step == 5 and meta == {"step": 5}
    _assert_same(state, _state(5))
    assert any("step 6" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert (directory / "6.corrupt").is_dir()
    assert ckpt.latest_step() == 5
    ckpt.save(6, _state(7))  # the step can be written again
  with checkpointing.Checkpointer(directory) as ckpt:
    step, state, _ = ckpt.restore_latest(_state(0))
    assert step == 6
    _assert_same(state, _state(7))


def test_partial_latest_step_falls_back(tmp_path, caplog):
  directory = tmp_path / "ckpt"
  with checkpointing.Checkpointer(directory) as ckpt:
    ckpt.save(1, _state(1))
    ckpt.save(2, _state(2))
  # Only half a step on disk: its metadata item is gone.
  for root, _, files in os.walk(directory / "2" / checkpointing.META_ITEM):
    for name in files:
      os.remove(os.path.join(root, name))
  with checkpointing.Checkpointer(directory) as ckpt, caplog.at_level(logging.WARNING):
    step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 1
  _assert_same(state, _state(1))
  assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_other_structure_is_a_user_error(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {"a": jnp.zeros((2,))})
    with pytest.raises(UserError, match="different state"):
      ckpt.restore_latest({"a": jnp.zeros((3,))})
    with pytest.raises(UserError, match="different state"):
      ckpt.restore_latest({"b": jnp.zeros((2,))})


def test_unserialisable_metadata_fails_at_once(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError):
      ckpt.save(1, {"a": jnp.zeros(2)}, {"bad": object()})
    assert ckpt.latest_step() is None


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
  """A save killed before it finished leaves only a temporary directory:
  the previous step is still the latest, and the leftover is cleaned up."""
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, _state(3))
  leftover = tmp_path / "4.orbax-checkpoint-tmp-1234567"
  (leftover / checkpointing.STATE_ITEM).mkdir(parents=True)
  (leftover / checkpointing.STATE_ITEM / "half_written").write_bytes(b"\0" * 10)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 3
    step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 3
  _assert_same(state, _state(3))
  assert not leftover.exists()


def test_unreadable_arrays_cost_one_warning_line(tmp_path, caplog):
  """Array files that cannot be read (metadata intact): orbax's other
  pending reads of the step fail too and asyncio reports each one ("exception
  was never retrieved", with a traceback) when it is collected. Only the
  fallback's warning reaches the log."""
  directory = tmp_path / "ckpt"
  many = lambda seed: {"w": [jnp.full((64,), seed + i, jnp.float32) for i in range(24)],
                       **_state(seed)}
  with checkpointing.Checkpointer(directory) as ckpt:
    ckpt.save(1, many(1))
    ckpt.save(2, many(2))
  data_files = [f for f in (directory / "2" / checkpointing.STATE_ITEM).rglob("*")
                if f.is_file() and f.parent.name == "d"]
  assert data_files
  for f in data_files:
    f.write_bytes(b"garbage")
  with caplog.at_level(logging.DEBUG), checkpointing.Checkpointer(directory) as ckpt:
    step, state, _ = ckpt.restore_latest(many(0))
    gc.collect()
  assert step == 1
  _assert_same(state, many(1))
  loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(loud) == 1 and "step 2" in loud[0].getMessage(), [
      r.getMessage()[:200] for r in loud]
  assert "\n" not in loud[0].getMessage()
