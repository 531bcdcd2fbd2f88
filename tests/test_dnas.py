"""DNAS steps: the toy task whose best op is known, the exact second-order
alpha gradient, optimiser settings."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from radars_jax import config_defaults
from radars_jax.dnas import steps as dnas_steps
from radars_jax import parallel
from radars_jax.nas.ops import OpSettings
from radars_jax.nas.mixed_ops import MixedOp

TOY_OPS = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_3x3")


class ToyNet(nn.Module):
  """x -> one mixed op -> global average -> linear: a one-edge supernet."""
  ops: tuple = TOY_OPS
  channels: int = 4

  @nn.compact
  def __call__(self, x, alphas=None, train=True):
    w = None if alphas is None else jax.nn.softmax(alphas[0])
    y = MixedOp(self.ops, self.channels, 1, OpSettings(pool_bn=True), name="edge")(x, w)
    return nn.Dense(2)(y.mean(axis=(1, 2)))


def toy_batch(key, n=32, size=8, channels=4):
  """Class 1: a checkerboard of random phase, class 0: flat; both have mean 0
  and the same noise. Only an op with a nonlinearity before a local filter
  (nor_conv_3x3: ReLU-conv-BN) tells them apart after global averaging;
  skip, pooling and none cannot."""
  k1, k2, k3 = jax.random.split(key, 3)
  labels = jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)
  phase = jnp.where(jax.random.bernoulli(k2, 0.5, (n,)), 1.0, -1.0)
  ii, jj = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  checker = jnp.where((ii + jj) % 2 == 0, 1.0, -1.0)
  images = labels[:, None, None, None] * phase[:, None, None, None] * checker[None, :, :, None]
  images = images + 0.3 * jax.random.normal(k3, (n, size, size, channels))
  return {"image": images.astype(jnp.float32), "label": labels}


def _dnas_config(**overrides):
  cfg = config_defaults.base_config().dnas
  cfg.update(overrides)
  return cfg


def _init(model, key):
  alphas = (1e-3 * jax.random.normal(jax.random.fold_in(key, 1), (len(TOY_OPS),)),)
  batch = toy_batch(key)
  weights = model.init(key, batch["image"], alphas)["params"]
  return weights, alphas


def test_single_level_finds_the_only_useful_op():
  model = ToyNet()
  cfg = _dnas_config(alpha_lr=0.01)
  schedule = dnas_steps.weight_schedule(cfg, 150)
  wtx, atx = dnas_steps.weight_optimizer(cfg, schedule), dnas_steps.alpha_optimizer(cfg)
  step = jax.jit(dnas_steps.make_train_step(model, "single_level", wtx, atx, schedule,
                                      cfg.weight_decay))
  weights, alphas = _init(model, jax.random.key(0))
  state = dnas_steps.DnasState(jnp.zeros((), jnp.int32), weights, alphas,
                         wtx.init(weights), atx.init(alphas))
  for i in range(150):
    state, metrics = step(state, toy_batch(jax.random.key(100 + i)), None)
  probs = jax.nn.softmax(state.alphas[0])
  assert TOY_OPS[int(jnp.argmax(probs))] == "nor_conv_3x3", probs
  assert float(metrics["accuracy"]) > 0.9


def test_first_and_second_order_steps_update_weights_and_alphas():
  model = ToyNet()
  cfg = _dnas_config()
  schedule = dnas_steps.weight_schedule(cfg, 10)
  wtx, atx = dnas_steps.weight_optimizer(cfg, schedule), dnas_steps.alpha_optimizer(cfg)
  weights, alphas = _init(model, jax.random.key(0))
  for mode in ("first_order", "second_order"):
    step = jax.jit(dnas_steps.make_train_step(model, mode, wtx, atx, schedule, cfg.weight_decay))
    state = dnas_steps.DnasState(jnp.zeros((), jnp.int32), weights, alphas,
                           wtx.init(weights), atx.init(alphas))
    new, metrics = step(state, toy_batch(jax.random.key(1)), toy_batch(jax.random.key(2)))
    chex.assert_tree_all_finite((new, metrics))
    assert int(new.step) == 1
    assert not np.allclose(new.alphas[0], alphas[0])
    assert not np.allclose(new.weights["Dense_0"]["kernel"], weights["Dense_0"]["kernel"])


def test_second_order_alpha_gradient_matches_finite_differences():
  """d/dalpha L_val(w - xi * (grad_w L_train(w, alpha) + wd w), alpha), exact
  by autodiff, against central differences in float64."""
  with jax.enable_x64(True):
    model = ToyNet(channels=2)
    key = jax.random.key(3)
    batch_w = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a,
                                     toy_batch(jax.random.key(4), n=8, channels=2))
    batch_a = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a,
                                     toy_batch(jax.random.key(5), n=8, channels=2))
    alphas = (jnp.asarray([0.1, -0.2, 0.3, 0.05], jnp.float64),)
    weights = model.init(key, batch_w["image"], alphas)["params"]
    weights = jax.tree_util.tree_map(lambda w: w.astype(jnp.float64), weights)
    xi, wd = 0.5, 3e-4  # a large xi makes the second-order term matter

    @jax.jit   # (one program each, not one per operation)
    def objective(a):
      return dnas_steps.unrolled_alpha_loss(model, a, weights, batch_w, batch_a, xi, wd)

    grad = jax.jit(jax.grad(objective))(alphas)[0]
    first_order = jax.jit(jax.grad(
        lambda a: dnas_steps.loss_and_accuracy(model, weights, a, batch_a)[0]))(alphas)[0]
    eps = 1e-5
    steps = np.eye(4) * eps
    fd = np.array([(objective((alphas[0] + e,)) - objective((alphas[0] - e,))) / (2 * eps)
                   for e in steps])
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-5, atol=1e-8)
    # the unrolled gradient really differs from the first-order one
    assert np.abs(np.asarray(grad) - np.asarray(first_order)).max() > 1e-4


def test_optimisers_follow_darts_settings():
  cfg = _dnas_config()
  schedule = dnas_steps.weight_schedule(cfg, 100)
  assert np.isclose(schedule(0), 0.025) and np.isclose(schedule(100), 0.001)
  for step in (0, 1, 37, 99, 100, 150):   # the host copy, for logging
    assert np.isclose(dnas_steps.weight_lr_at(cfg, 100, step), float(schedule(step)), rtol=1e-6)
  # gradient clipping at norm 5 then SGD: a huge gradient moves weights by lr * 5
  tx = dnas_steps.weight_optimizer(_dnas_config(weight_decay=0.0, momentum=0.0), schedule)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 1e6)}, tx.init(params), params)
  np.testing.assert_allclose(np.linalg.norm(updates["w"]), 0.025 * 5.0, rtol=1e-5)
  assert cfg.alpha_betas == (0.5, 0.999) and cfg.alpha_lr == 3e-4


def test_bytes_only_compile_reads_the_bytes_of_the_step_that_runs(monkeypatch):
  """A step compiled only for its bytes (on the CPU: no kernel optimisation,
  the older fusion emitters) needs the bytes of the step that runs, or at
  most 1 KiB more: XLA assigns buffers before it generates code."""
  model = ToyNet()
  program = dnas_steps.DnasProgram(model, "first_order", _dnas_config(), 10, parallel.make_mesh(),
                             (0.0,), (1.0,))
  weights, alphas = jax.eval_shape(lambda: _init(model, jax.random.key(0)))
  inputs = program.abstract_inputs(weights, alphas, 32, (8, 8, 4))
  if jax.default_backend() == "cpu":
    assert dnas_steps.bytes_only_compiler_options() == {
        "xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
  measured = program.compile_train_step(*inputs, bytes_only=True)
  # the step as it runs outside this suite: XLA's default optimisation
  # level and fusion emitters (the suite turns both down: conftest.py)
  runs_options = {"xla_backend_optimization_level": 3}
  if jax.default_backend() == "cpu":
    runs_options["xla_cpu_use_fusion_emitters"] = True
  monkeypatch.setattr(dnas_steps, "bytes_only_compiler_options", lambda: runs_options)
  runs = program.compile_train_step(*inputs, bytes_only=True)
  assert runs.bytes > 0
  assert runs.bytes <= measured.bytes <= runs.bytes + 1024, (measured.bytes, runs.bytes)


def _toy_first_state():
  """(model, dnas config, schedule, weight and alpha optimisers, step-0
  state) of the toy network, for the bi-level step tests."""
  model = ToyNet()
  cfg = _dnas_config()
  schedule = dnas_steps.weight_schedule(cfg, 10)
  wtx, atx = dnas_steps.weight_optimizer(cfg, schedule), dnas_steps.alpha_optimizer(cfg)
  weights, alphas = _init(model, jax.random.key(0))
  state = dnas_steps.DnasState(jnp.zeros((), jnp.int32), weights, alphas,
                         wtx.init(weights), atx.init(alphas))
  return model, cfg, schedule, wtx, atx, state


def test_first_order_passes_in_loop_match_the_two_passes():
  """`passes_in_loop` (both first-order passes as one `lax.scan`) gives the
  state and metrics of the two passes written out, over several steps."""
  model, cfg, schedule, wtx, atx, start = _toy_first_state()
  results = {}
  for in_loop in (False, True):
    step = jax.jit(dnas_steps.make_train_step(model, "first_order", wtx, atx, schedule,
                                        cfg.weight_decay, with_train_alpha_grad=True,
                                        passes_in_loop=in_loop))
    state, history = start, []
    for i in range(3):
      state, metrics = step(state, toy_batch(jax.random.key(2 * i + 1)),
                            toy_batch(jax.random.key(2 * i + 2)))
      history.append(metrics)
    results[in_loop] = state, history
  chex.assert_trees_all_close(results[True], results[False], rtol=1e-5, atol=1e-6)
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                 results[True][0].alphas, start.alphas)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4   # the alpha pass was applied
  # `dnas.passes_in_loop` reaches the step through `DnasProgram`
  mesh = parallel.make_mesh(jax.devices()[:1])
  for in_loop in (False, True):
    cfg.passes_in_loop = in_loop
    program = dnas_steps.DnasProgram(model, "first_order", cfg, 10, mesh, (0.0,), (1.0,))
    jaxpr = jax.make_jaxpr(program.step_fn)(start, toy_batch(jax.random.key(1)),
                                            toy_batch(jax.random.key(2)))
    assert ("scan" in {e.primitive.name for e in jaxpr.eqns}) == in_loop
  with pytest.raises(ValueError, match="first-order"):
    dnas_steps.make_train_step(model, "second_order", wtx, atx, schedule, cfg.weight_decay,
                         passes_in_loop=True)
  step = jax.jit(dnas_steps.make_train_step(model, "first_order", wtx, atx, schedule,
                                      cfg.weight_decay, passes_in_loop=True))
  small = toy_batch(jax.random.key(1), n=2)
  with pytest.raises(ValueError, match="equal batch shapes"):
    step(start, toy_batch(jax.random.key(1)), small)


def test_train_alpha_gradient_is_reported_never_applied():
  """The weight pass's optional alpha gradient (kept on the CPU for XLA's
  fusion) changes no weight and no alpha: the same state either way."""
  model, cfg, schedule, wtx, atx, state = _toy_first_state()
  batches = toy_batch(jax.random.key(1)), toy_batch(jax.random.key(2))
  results = {}
  for keep in (False, True):
    step = jax.jit(dnas_steps.make_train_step(model, "first_order", wtx, atx, schedule,
                                        cfg.weight_decay, with_train_alpha_grad=keep))
    results[keep] = step(state, *batches)
  chex.assert_trees_all_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
  assert "alpha_grad_norm_train" not in results[False][1]
  assert float(results[True][1]["alpha_grad_norm_train"]) > 0
  single = dnas_steps.make_train_step(model, "single_level", wtx, atx, schedule, cfg.weight_decay,
                                with_train_alpha_grad=True)
  assert set(jax.jit(single)(state, batches[0])[1]) == {"loss", "accuracy"}


class TinyMix(nn.Module):
  """x [B, 4] -> softmax(alphas)-weighted sum of three smooth ops -> linear:
  small enough for float64 finite differences of its gradients."""

  @nn.compact
  def __call__(self, x, alphas, train=True):
    del train
    p = jax.nn.softmax(alphas[0])
    ops = (jnp.tanh(nn.Dense(3, name="tanh")(x)), jnp.sin(nn.Dense(3, name="sin")(x)),
           nn.Dense(3, name="linear")(x))
    mixed = sum(p[i] * y for i, y in enumerate(ops))
    return nn.Dense(2, name="head")(mixed)


def _tiny_batch(seed, n=6):
  rng = np.random.default_rng(seed)   # (numpy: no program to compile)
  return {"image": jnp.asarray(rng.normal(size=(n, 4))),
          "label": jnp.asarray(rng.integers(0, 2, n), jnp.int32)}


def _tiny_weights(seed):
  """TinyMix's parameters, drawn here (kernels of scale 2: curved enough for the
  second-order term to matter)."""
  rng = np.random.default_rng(seed)
  dense = lambda n_in, n_out: {"kernel": jnp.asarray(2.0 * rng.normal(size=(n_in, n_out))),
                               "bias": jnp.asarray(0.1 * rng.normal(size=(n_out,)))}
  return {"tanh": dense(4, 3), "sin": dense(4, 3), "linear": dense(4, 3), "head": dense(3, 2)}


def test_second_order_step_matches_the_darts_finite_difference_formula():
  """The whole second-order step (`make_train_step`) against DARTS's own
  approximation (Liu et al. 2019, eq. 7-8), computed here with first-order
  gradients only:
    w' = w - xi (grad_w L_train(w, a) + wd w)
    grad_a = grad_a L_val(w', a)
             - xi (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps)
    w+- = w +- eps grad_w' L_val(w', a),  eps = 0.01 / |grad_w' L_val|
  with xi the weight learning rate at the state's step, L_train on the
  weight batch, L_val on the alpha batch; then the weight step takes
  grad_w L_train(w, a_new) on the weight batch. Plain SGD on both (the alpha
  rate 1) so that the new state shows the gradients themselves."""
  with jax.enable_x64(True):
    model = TinyMix()
    batch_w, batch_a = _tiny_batch(11), _tiny_batch(12)
    alphas = (jnp.asarray([0.3, -0.4, 0.1], jnp.float64),)
    weights = _tiny_weights(13)
    schedule = lambda step: 0.2 + 0.1 * step   # xi = 0.5 at step 3
    step_number, xi, wd, weight_lr = 3, 0.5, 0.05, 0.1

    def loss(w, a, batch):   # cross-entropy written out, not dnas_steps.loss_and_accuracy
      logp = jax.nn.log_softmax(model.apply({"params": w}, batch["image"], a))
      return -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))

    @jax.jit
    def darts_formula(weights, alphas, batch_w, batch_a):
      tree = jax.tree_util.tree_map
      g_train = jax.grad(loss)(weights, alphas, batch_w)
      w_unrolled = tree(lambda w, g: w - xi * (g + wd * w), weights, g_train)
      dval_w, dval_a = jax.grad(loss, argnums=(0, 1))(w_unrolled, alphas, batch_a)
      eps = 0.01 / optax.tree.norm(dval_w)
      w_plus = tree(lambda w, v: w + eps * v, weights, dval_w)
      w_minus = tree(lambda w, v: w - eps * v, weights, dval_w)
      second = xi * (jax.grad(loss, argnums=1)(w_plus, alphas, batch_w)[0]
                     - jax.grad(loss, argnums=1)(w_minus, alphas, batch_w)[0]) / (2 * eps)
      grad_a = dval_a[0] - second
      new_alphas = (alphas[0] - grad_a,)
      grad_w = jax.grad(loss)(weights, new_alphas, batch_w)
      new_weights = tree(lambda w, g: w - weight_lr * g, weights, grad_w)
      return grad_a, second, new_weights, loss(weights, new_alphas, batch_w)

    expected_grad_a, second, expected_weights, expected_loss = darts_formula(
        weights, alphas, batch_w, batch_a)
    wtx, atx = optax.sgd(weight_lr), optax.sgd(1.0)
    step = jax.jit(dnas_steps.make_train_step(model, "second_order", wtx, atx, schedule, wd,
                                        with_train_alpha_grad=False))
    state = dnas_steps.DnasState(jnp.asarray(step_number, jnp.int32), weights, alphas,
                           wtx.init(weights), atx.init(alphas))
    new, metrics = step(state, batch_w, batch_a)
    # The second-order term matters here: dropping it (first order), or
    # changing xi by 20%, moves the gradient by far more than the tolerance.
    assert float(jnp.abs(second).max()) > 0.02, second
    np.testing.assert_allclose(np.asarray(alphas[0] - new.alphas[0]),
                               np.asarray(expected_grad_a), rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(new.weights, expected_weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-6)
    assert int(new.step) == step_number + 1


def test_an_evaluator_compiled_ahead_neither_traces_nor_compiles_when_called(monkeypatch):
  """`Evaluator.compile_ahead` on abstract inputs (RADARS's compile thread
  does it for the shared supernet's evaluator): `evaluate` then runs that
  program, with the numbers of an evaluator that compiles on its first
  call; inputs of other shapes still compile their own."""
  from radars_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  split = data_lib.to_device(rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8),
                             rng.integers(0, 10, 20).astype(np.int32),
                             parallel.replicated(mesh))
  logits = lambda w, x: x.mean((1, 2)) @ w
  weights = jax.random.normal(jax.random.key(0), (3, 10))
  expected = dnas_steps.Evaluator(logits, mesh, (0.4,) * 3, (0.2,) * 3).evaluate(weights, split, 8)
  evaluator = dnas_steps.Evaluator(logits, mesh, (0.4,) * 3, (0.2,) * 3)
  evaluator.compile_ahead(jax.ShapeDtypeStruct((3, 10), jnp.float32), split, 8)
  jit_calls = []
  step = evaluator._step   # pylint: disable=protected-access
  monkeypatch.setattr(evaluator, "_step",
                      lambda *args, **kwargs: jit_calls.append(1) or step(*args, **kwargs))
  assert evaluator.evaluate(weights, split, 8) == pytest.approx(expected, rel=1e-6)
  assert not jit_calls
  wider = jax.random.normal(jax.random.key(1), (3, 12))
  expected = dnas_steps.Evaluator(logits, mesh, (0.4,) * 3, (0.2,) * 3).evaluate(wider, split, 8)
  assert evaluator.evaluate(wider, split, 8) == pytest.approx(expected, rel=1e-6)
  assert jit_calls
