"""Scanned edges (`supernet.scan_edges`) recompute each mixed op in the
backward pass (`OpSettings.remat`, always on in supernets): the same loss
and gradients from the same weights as a scan that keeps every op's
activations, and the gradient keeps less. The scan without recomputation
is built here only to show what recomputing saves."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from radars_jax.nas import spaces
from radars_jax.nas import supernet

DARTS_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def _config(**kw):
  return ml_collections.ConfigDict({**dict(channels=4, layers=3, cells_per_stage=1,
                                           depthwise_impl="shifted"), **kw})


def _compiled_grad(model, params, alphas, x):
  def loss(params, alphas, x):
    return jnp.mean(model.apply({"params": params}, x, alphas) ** 2)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, alphas, x).compile()


@pytest.mark.parametrize("space_name,op_names", [
    ("darts", DARTS_OPS),
    ("nb201", ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")),
])
def test_remat_same_numbers_less_memory(space_name, op_names):
  space = spaces.make_space(space_name, steps=2 if space_name == "darts" else None)
  sub = (tuple(space.op_names.index(n) for n in op_names),) * space.num_choice_points
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))
  alphas = supernet.init_alphas(jax.random.key(2), sub, scale=1.0)
  recomputed = supernet.build_supernet(space, sub, _config(scan_edges=True, steps=2), 10)
  assert recomputed.settings.remat
  kept = recomputed.clone(settings=dataclasses.replace(recomputed.settings, remat=False))
  models = [kept, recomputed]
  params = [supernet.init_params(m, (8, 8, 3), alphas, jax.random.key(0)) for m in models]
  chex.assert_trees_all_equal(params[1], params[0])   # same paths, shapes and values
  jaxpr = str(jax.make_jaxpr(lambda p: models[1].apply({"params": p}, x, alphas))(params[1]))
  assert "checkpoint" in jaxpr or "remat" in jaxpr
  compiled = [_compiled_grad(m, params[0], alphas, x) for m in models]
  (loss, grads), (loss_r, grads_r) = (c(params[0], alphas, x) for c in compiled)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-5)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads))
  chex.assert_trees_all_close(grads_r, grads, atol=1e-4 * scale, rtol=1e-3)
  if space_name == "darts":
    # the separable convolutions' inner activations are not kept
    nbytes = [c.memory_analysis().temp_size_in_bytes for c in compiled]
    assert nbytes[1] < 0.8 * nbytes[0], nbytes
