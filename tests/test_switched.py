"""The switched supernet (one program for every subspace of k ops): the
same training numbers as the static supernet of the subspace, weights of
unslotted ops left alone, slots in cost order, parameter owners."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from radars_jax import config_defaults
from radars_jax.dnas import steps as dnas_steps
from radars_jax import parallel
from radars_jax.dnas import search
from radars_jax.nas import mixed_ops
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.nas import weight_pool

ORDER = (3, 2, 4, 1, 0)   # NB-201 ops costliest first: conv 3x3, conv 1x1, pool, skip, none


def _cfg(**kw):
  return ml_collections.ConfigDict({**dict(channels=4, cells_per_stage=1, layers=3, steps=4,
                                           depthwise_impl="xla"), **kw})


def test_subspace_slots_follow_the_cost_order_and_round_trip():
  subspace = ((0, 3), (2,), (1, 2, 4), (0, 1), (3, 4), (2, 3))
  orders = (ORDER,) * 6
  slots = supernet.subspace_slots(subspace, 3, orders)
  np.testing.assert_array_equal(slots[0], [3, 0, -1])
  np.testing.assert_array_equal(slots[2], [2, 4, 1])
  for c, active in enumerate(subspace):   # slot s never holds one of the s costliest ops
    for s, op in enumerate(slots[c][:len(active)]):
      assert ORDER.index(op) >= s
  vectors = [np.arange(len(a), dtype=np.float32) + 10 * c for c, a in enumerate(subspace)]
  padded = supernet.to_slots(vectors, subspace, slots)
  chex.assert_shape(padded, [(3,)] * 6)
  assert float(padded[0][0]) == 1.0 and float(padded[0][2]) == 0.0   # op 3 was second
  back = supernet.from_slots(padded, subspace, slots)
  for u, v in zip(back, vectors):
    np.testing.assert_array_equal(u, v)
  with pytest.raises(ValueError, match="more than k"):
    supernet.subspace_slots(subspace, 2, orders)


def test_switched_step_equals_the_static_step_and_fits_in_the_static_worst_case():
  """Three single-level steps: loss, alphas and the subspace's weights as
  the subspace's own program gives them; other ops' weights untouched.
  Memory: the switched program keeps each choice point's input for the
  backward pass instead of every branch's activations, so its temporaries
  stay within those of the costliest static subspace of 2 ops (both convs
  on every edge). Differentiating `lax.switch` directly needed 2.2x."""
  space = spaces.make_space("nb201")
  subspace = ((0, 3), (2,), (1, 2), (3, 4), (0, 2), (1, 4))   # `none`, one op, pools, convs
  k = 2
  orders = (ORDER,) * 6
  cfg = _cfg()
  mesh = parallel.make_mesh()
  dcfg = config_defaults.base_config().dnas
  switched = supernet.build_supernet(space, None, cfg, 10, switched=True, slot_orders=orders)
  static = supernet.build_supernet(space, subspace, cfg, 10)
  alphas = supernet.init_alphas(jax.random.key(1), subspace, 0.5)
  full = supernet.init_params(switched, (8, 8, 3), None, jax.random.key(2))
  owners = supernet.param_owners(switched, space, weight_pool.flatten(full))
  flat = weight_pool.flatten(full)
  own = weight_pool.flatten(supernet.param_shapes(static, (8, 8, 3), alphas))
  weights = weight_pool.unflatten({p: flat[p] for p in own})
  slots = supernet.subspace_slots(subspace, k, orders)
  programs = {
      "static": dnas_steps.DnasProgram(static, "single_level", dcfg, 10, mesh, (0.0,), (1.0,)),
      "switched": dnas_steps.DnasProgram(switched, "single_level", dcfg, 10, mesh, (0.0,), (1.0,),
                                   owners=owners)}
  states = {"static": programs["static"].init_state(weights, alphas),
            "switched": programs["switched"].init_state(   # (a copy: the step donates it)
                jax.tree_util.tree_map(jnp.copy, full), supernet.to_slots(alphas, subspace, slots),
                slots)}
  steps = {"static": jax.jit(programs["static"].step_fn)}
  switched_step = programs["switched"].compile_train_step(*programs["switched"].abstract_inputs(
      supernet.param_shapes(switched, (8, 8, 3)),
      tuple(jax.ShapeDtypeStruct((k,), jnp.float32) for _ in subspace), 16, (8, 8, 3),
      jax.ShapeDtypeStruct((6, k), jnp.int32)))
  steps["switched"] = switched_step.fn
  worst = ((2, 3),) * 6   # conv 1x1 and conv 3x3 everywhere
  worst_step, _ = search.compile_subspace_step(
      dnas_steps.DnasProgram(supernet.build_supernet(space, worst, cfg, 10), "single_level", dcfg, 10,
                       mesh, (0.0,), (1.0,)), worst, (8, 8, 3), 16, bytes_only=True)
  temp = lambda c: c.fn.memory_analysis().temp_size_in_bytes
  assert 0 < temp(switched_step) <= temp(worst_step)
  for i in range(3):
    key = jax.random.key(10 + i)
    batch = jax.device_put(
        {"image": jax.random.normal(key, (16, 8, 8, 3)),
         "label": jax.random.randint(jax.random.fold_in(key, 1), (16,), 0, 10)},
        programs["switched"].batch_sharding)
    losses = {}
    for name in programs:
      states[name], metrics = steps[name](states[name], batch, None)
      losses[name] = float(metrics["loss"])
    assert losses["switched"] == pytest.approx(losses["static"], rel=1e-5)
  got = weight_pool.flatten(jax.device_get(states["switched"].weights))
  want = weight_pool.flatten(jax.device_get(states["static"].weights))
  for path in flat:
    if path in want:
      np.testing.assert_allclose(got[path], want[path], rtol=1e-4, atol=1e-5, err_msg=path)
    else:   # an op outside the subspace: no update, no weight decay
      np.testing.assert_array_equal(got[path], flat[path], err_msg=path)
  assert any(not np.array_equal(want[p], flat[p]) for p in want)   # it did train
  got_alphas = supernet.from_slots(jax.device_get(states["switched"].alphas), subspace, slots)
  for u, v in zip(got_alphas, jax.device_get(states["static"].alphas)):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_param_owners_name_the_choice_point_and_op_of_darts_weights():
  space = spaces.make_space("darts", ops="none,sep_conv_3x3,skip_connect")
  model = supernet.build_supernet(space, None, _cfg(), 10, switched=True)
  paths = weight_pool.flatten(supernet.param_shapes(model, (8, 8, 3)))
  owners = supernet.param_owners(model, space, paths)
  n = len(spaces.darts_edges())
  assert owners and all(p.startswith("cell_") for p in owners)
  assert not any("preprocess" in p or "stem" in p or "classifier" in p for p in owners)
  for path, (c, o) in owners.items():
    cell, edge, op = path.split("/")[:3]
    assert op == space.choice_points[c].ops[o]
    assert (c >= n) == (int(cell.split("_")[1]) in supernet.reduction_cells(3))
    assert edge == "edge_%d_%d" % spaces.darts_edges()[c % n]
  # every parameterised op of every edge of every cell has an owner
  assert {(p.split("/")[0], p.split("/")[1], p.split("/")[2]) for p in owners} == {
      (p.split("/")[0], p.split("/")[1], p.split("/")[2]) for p in paths if "/edge_" in p}


def test_recomputed_switch_has_the_gradients_of_lax_switch():
  """Value, gradient and gradient of a gradient (DARTS second order) of the
  recomputing switch equal those of `lax.switch`, for every branch."""
  branches = [lambda x, p: jnp.sin(x * p["a"]), lambda x, p: x * x * p["b"],
              lambda x, p: jnp.zeros_like(x)]
  x = jnp.linspace(-1.0, 1.0, 5)
  params = {"a": jnp.float32(0.7), "b": jnp.float32(-1.3)}
  for index in range(3):
    def loss(x, params, switch):
      return jnp.sum(switch(jnp.int32(index), branches, x, params) ** 2)
    def outer(params, switch):   # d/dparams of |d loss / dx|^2
      return jnp.sum(jax.grad(loss)(x, params, switch) ** 2)
    for fn in (loss, jax.grad(loss, argnums=(0, 1))):
      chex.assert_trees_all_close(fn(x, params, mixed_ops.recomputed_switch),
                                  fn(x, params, jax.lax.switch), rtol=1e-6)
    chex.assert_trees_all_close(jax.grad(outer)(params, mixed_ops.recomputed_switch),
                                jax.grad(outer)(params, jax.lax.switch), rtol=1e-5)


STEPS = 2   # nodes of a DARTS cell (NAS-Bench-201's cell is fixed)


@pytest.mark.parametrize("space_name,ops", [("nb201", None),
                                            ("darts", "none,skip_connect,dil_conv_3x3")])
def test_scanned_switched_cells_equal_per_edge_switched_cells(space_name, ops):
  """`supernet.scan_switched` (each cell's edges in a scan with its own
  gradient) against one `SwitchedMixedOp` per edge, on a random subspace
  of at most 2 ops per choice point: the same weight paths, loss, weight
  and alpha gradients, and (DARTS cells: the same scan gradient, where
  NB-201's per-edge second order is a long compile) DARTS second-order
  alpha gradient. DARTS covers
  the reduction cell's two scans (from the inputs, then between nodes),
  in a network of one cell of 2 nodes (a reduction cell: the normal cell's
  scans are the same with stride 1) to keep the per-edge second order's
  compile short."""
  space = spaces.make_space(space_name, ops=ops, steps=STEPS if space_name == "darts" else None)
  k = 2
  rng = np.random.default_rng(0)
  subspace = tuple(tuple(sorted(rng.choice(len(cp.ops), size=rng.integers(1, k + 1),
                                           replace=False).tolist()))
                   for cp in space.choice_points)
  orders = tuple(tuple(rng.permutation(len(cp.ops)).tolist()) for cp in space.choice_points)
  if space_name == "darts":   # the same order on the edges of each scan
    n = len(spaces.darts_edges(STEPS))
    orders = (orders[0],) * n + tuple(orders[n] if src < 2 else orders[n + 1]
                                      for src, _ in spaces.darts_edges(STEPS))
  else:
    orders = (orders[0],) * len(orders)
  slots = jnp.asarray(supernet.subspace_slots(subspace, k, orders))
  layers = {"darts": 1, "nb201": 3}[space_name]   # (nb201: cells_per_stage)
  models = {scan: supernet.build_supernet(space, None,
                                          _cfg(scan_switched=scan, layers=layers, steps=STEPS), 10,
                                          switched=True, slot_orders=orders)
            for scan in (False, True)}
  weights = supernet.init_params(models[False], (8, 8, 3), None, jax.random.key(2))
  assert set(weight_pool.flatten(supernet.param_shapes(models[True], (8, 8, 3)))) == set(
      weight_pool.flatten(weights))
  alphas = supernet.to_slots(supernet.init_alphas(jax.random.key(1), subspace, 0.5),
                             subspace, slots)
  images = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
  labels = jnp.arange(4) % 10

  def grads(model):
    def loss(w, a):
      logits = model.apply({"params": w}, images, a, slots=slots)
      return optax_xent(logits, labels)

    def unrolled(a):   # DARTS second order, through one virtual weight step
      g = jax.grad(loss)(weights, a)
      return loss(jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, weights, g), a)

    value, (g_w, g_a) = jax.value_and_grad(loss, argnums=(0, 1))(weights, alphas)
    second = jax.grad(unrolled)(alphas) if space_name == "darts" else ()
    return value, weight_pool.flatten(g_w), g_a, second

  # (the per-edge model's second order is the slow compile here)
  scanned, per_edge = (jax.jit(lambda m=m: grads(m))() for m in (models[True], models[False]))
  assert float(scanned[0]) == pytest.approx(float(per_edge[0]), rel=1e-6)
  for path, g in per_edge[1].items():
    np.testing.assert_allclose(scanned[1][path], g, rtol=1e-4, atol=1e-6, err_msg=path)
  for got, want in list(zip(scanned[2], per_edge[2])) + list(zip(scanned[3], per_edge[3])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
  assert any(float(jnp.abs(g).max()) > 0 for g in per_edge[3]) or space_name == "nb201"


def optax_xent(logits, labels):
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])
