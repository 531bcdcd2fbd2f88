"""`supernet.scan_edges`: each cell's edges in a `lax.scan` compute what one
`MixedOp` per edge computes, and the hand-written ReLU and BatchNorm
gradients it relies on equal autodiff's, to second order."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from radars_jax.nas import ops
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.nas import weight_pool
from radars_jax.errors import UserError


def _config(**kw):
  return ml_collections.ConfigDict({**dict(channels=4, layers=3, cells_per_stage=1,
                                           depthwise_impl="shifted"), **kw})


def _has_scan(model, x, alphas, params) -> bool:
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x, alphas))(params)
  return "scan" in str(jaxpr)


def _loss_and_grads(model, params, alphas, x):
  def f(p, a):
    return jnp.mean(model.apply({"params": p}, x, a) ** 2)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, alphas)


@pytest.mark.parametrize("space_name,op_names", [
    # DARTS (normal and reduction cells, of 2 nodes: both kinds of scan,
    # from the inputs and between nodes): a weightless op, the identity
    # (FactorizedReduce in reduction cells), a conv and `none`
    ("darts", ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")),
    ("nb201", ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")),
])
def test_scanned_supernet_equals_per_edge_mixed_ops(space_name, op_names):
  space = spaces.make_space(space_name, steps=2 if space_name == "darts" else None)
  ops_of_edge = tuple(space.op_names.index(n) for n in op_names)
  sub = (ops_of_edge,) * space.num_choice_points
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  alphas = supernet.init_alphas(jax.random.key(2), sub, scale=1.0)
  per_edge, scanned = [supernet.build_supernet(space, sub, _config(scan_edges=scan, steps=2), 10)
                       for scan in (False, True)]
  params = supernet.init_params(per_edge, (8, 8, 3), alphas, jax.random.key(0))
  params_s = supernet.init_params(scanned, (8, 8, 3), alphas, jax.random.key(0))
  # the scanned cells store each op's weights stacked over their edges (one
  # array per op and scan, not per edge); per edge, the same paths, shapes
  # and initial values: weight pools see no difference
  n_e, n_s = (len(jax.tree_util.tree_leaves(p)) for p in (params, params_s))
  assert n_s < n_e, (n_s, n_e)
  chex.assert_trees_all_equal(weight_pool.canonical(params_s), weight_pool.canonical(params))
  chex.assert_trees_all_equal(weight_pool.restack(weight_pool.canonical(params), params_s),
                              params_s)
  assert _has_scan(scanned, x, alphas, params_s)
  assert not _has_scan(per_edge, x, alphas, params)
  (loss_e, grads_e), (loss_s, grads_s) = (_loss_and_grads(m, p, alphas, x)
                                          for m, p in ((per_edge, params), (scanned, params_s)))
  np.testing.assert_allclose(loss_s, loss_e, rtol=1e-5)
  # gradients, up to float noise relative to each leaf's scale (the
  # classifier bias's gradient is ~0: the logits' batch mean after BatchNorm)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads_e))
  chex.assert_trees_all_close(weight_pool.canonical(grads_s[0]),
                              weight_pool.canonical(grads_e[0]), atol=1e-4 * scale, rtol=1e-3)
  chex.assert_trees_all_close(grads_s[1], grads_e[1], atol=1e-4 * scale, rtol=1e-3)


def test_scan_edges_runs_per_edge_where_edges_differ():
  """A subspace whose edges hold different ops (a RADARS sample) cannot be
  scanned: those cells run one MixedOp per edge, with the same numbers."""
  space = spaces.make_space("darts")
  sub = tuple((3,) if i % 2 else (1, 3) for i in range(space.num_choice_points))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  alphas = supernet.init_alphas(jax.random.key(2), sub)
  scanned = supernet.build_supernet(space, sub, _config(scan_edges=True, layers=2), 10)
  per_edge = supernet.build_supernet(space, sub, _config(layers=2), 10)
  params = supernet.init_params(per_edge, (8, 8, 3), alphas, jax.random.key(0))
  assert not _has_scan(scanned, x, alphas, params)
  chex.assert_trees_all_close(scanned.apply({"params": params}, x, alphas),
                              per_edge.apply({"params": params}, x, alphas))


def test_kernel_size_is_read_from_every_kind_of_name():
  names = ("sep_conv_5x5", "dil4_conv_3x3", "mbconv_7x7_e3", "conv_1x7_7x1", "nor_conv_1x1",
           "max_pool_3x3", "avg_pool_5x5")
  assert [ops.kernel_size(n) for n in names] == [5, 3, 7, 7, 1, 3, 5]


FUNCTIONAL = [(name, stride) for name in ops.OP_NAMES for stride in (1, 2)
              if ops.param_schema(name, 4, stride) is not None]


@pytest.mark.parametrize("name,stride", FUNCTIONAL)
def test_every_functional_form_equals_its_module(name, stride):
  """`ops.functional_op_of_relu`: the op's module, in value and in the
  gradients of its input and weights (the module's parameter tree is the
  op's `param_schema`)."""
  settings = ops.OpSettings()   # (both forms call the same depthwise kernels)
  module = ops.make_op(name, 4, stride, settings, unbound=True)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  params = module.init(jax.random.key(1), x)["params"]
  chex.assert_trees_all_equal_shapes(
      params, jax.tree_util.tree_map(jnp.zeros, ops.param_schema(name, 4, stride),
                                     is_leaf=lambda v: isinstance(v, tuple)))
  out_shape = module.apply({"params": params}, x).shape
  cotangent = jax.random.normal(jax.random.key(3), out_shape)

  ys, grads = jax.value_and_grad(
      lambda p, x: jnp.vdot(module.apply({"params": p}, x), cotangent),
      argnums=(0, 1))(params, x)
  ys_f, grads_f = jax.value_and_grad(
      lambda p, x: jnp.vdot(ops.functional_op_of_relu(name, p, ops.relu(x), stride, settings),
                            cotangent),
      argnums=(0, 1))(params, x)
  np.testing.assert_allclose(ys_f, ys, rtol=1e-4)
  chex.assert_trees_all_close(grads_f, grads, atol=1e-4, rtol=1e-3)


def test_scan_edges_refuses_what_it_cannot_compute(monkeypatch):
  nb201 = spaces.make_space("nb201")   # as if nor_conv_3x3 had no stacked form
  schema = ops.param_schema
  monkeypatch.setattr(ops, "param_schema",
                      lambda n, c, s: None if n == "nor_conv_3x3" else schema(n, c, s))
  with pytest.raises(UserError, match="nor_conv_3x3"):
    supernet.build_supernet(nb201, nb201.full_subspace(), _config(scan_edges=True), 10)


def _second_order(fn, x, r):
  """Gradient of a gradient: d/dx <d/dx <fn(x), r>, r>."""
  inner = lambda x: jnp.vdot(jax.grad(lambda y: jnp.vdot(fn(y), r))(x), r)
  return jax.grad(inner)(x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lean_relu_and_batch_norm_equal_autodiff(dtype):
  x = jax.random.normal(jax.random.key(0), (3, 5, 4, 6)).astype(dtype)
  x = x.at[0, 0, 0, 0].set(0)   # ReLU's kink: gradient 0, as jax.nn.relu's
  r = jax.random.normal(jax.random.key(1), x.shape).astype(dtype)
  tol = dict(atol=1e-5, rtol=1e-5) if dtype == jnp.float32 else dict(atol=5e-2, rtol=5e-2)
  for axes in [(0, 1, 2), (1, 2)]:
    lean = lambda y, axes=axes: ops.batch_norm(y, axes)
    plain = lambda y, axes=axes: ops._normalise(y, axes).astype(y.dtype)  # pylint: disable=protected-access
    chex.assert_trees_all_close(lean(x), plain(x), **tol)
    chex.assert_trees_all_close(jax.vjp(lean, x)[1](r), jax.vjp(plain, x)[1](r), **tol)
    if dtype == jnp.float32:   # DARTS second order differentiates the gradient
      chex.assert_trees_all_close(_second_order(lean, x, r), _second_order(plain, x, r),
                                  atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_equal(ops.relu(x), jax.nn.relu(x))
  chex.assert_trees_all_equal(jax.vjp(ops.relu, x)[1](r), jax.vjp(jax.nn.relu, x)[1](r))


def test_scanned_search_is_the_per_edge_search():
  """A whole DNAS run (train, derive, score the derived network with the
  inherited weights) with scan_edges on: the alphas, genotype and weights of
  the per-edge run, its stacked weights written to the pool per edge."""
  from radars_jax import config_defaults
  from radars_jax import parallel
  from radars_jax.dnas import search  # pylint: disable=import-outside-toplevel
  results, pools = {}, {}
  for scan in (False, True):
    config = config_defaults.base_config()
    config.progress_bar = False
    config.data.update(name="synthetic", image_size=8, train_size=96, test_size=16,
                       holdout_size=32, batch_size=16, eval_batch_size=32)
    config.space.name = "nb201"
    config.supernet.update(channels=4, cells_per_stage=1, depthwise_impl="shifted",
                           scan_edges=scan)
    config.dnas.derived_finetune_steps = 2
    mesh = parallel.make_mesh(jax.devices()[:1])
    space = spaces.space_from_config(config.space)
    searcher = search.Searcher(config, mesh, search.load_search_data(config.data, mesh), space)
    results[scan] = searcher.run_dnas(space.full_subspace(), 1, jax.random.key(0))
    pools[scan] = weight_pool.WeightPool()
    pools[scan].write_back(results[scan].weights)
  assert any("/edges_" in p for p in weight_pool.flatten(results[True].weights))
  assert not any("/edges_" in p for p in weight_pool.flatten(results[False].weights))
  assert results[True].genotype == results[False].genotype
  for a, b in zip(results[True].alphas, results[False].alphas):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert results[True].val_accuracy == results[False].val_accuracy
  assert sorted(pools[True].arrays) == sorted(pools[False].arrays)
  for path, value in pools[False].arrays.items():
    np.testing.assert_allclose(pools[True].arrays[path], value, rtol=1e-3, atol=1e-5)
