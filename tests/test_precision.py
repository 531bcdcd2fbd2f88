"""Mixed precision (radars_jax.precision): a bfloat16 DNAS search still finds
the toy task's op with float32 weights, alphas and optimiser states; the
retraining step in bfloat16 keeps float32 parameters and BatchNorm
statistics; the cost model traces the dtype that runs; `auto` picks
bfloat16 on GPU and TPU only."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import config_defaults
from radars_jax import data as data_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax import precision
from radars_jax.dnas import steps as dnas_steps
from radars_jax.nas import genotypes
from radars_jax.nas import spaces
from radars_jax.radars import cost_model
from radars_jax.retrain import networks
from radars_jax.retrain import steps as retrain_steps
from radars_jax.retrain import train
from test_dnas import TOY_OPS, ToyNet, _dnas_config, _init, toy_batch
from test_train import _tiny_spec

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|"


def _dtypes(tree) -> set:
  return {leaf.dtype for leaf in jax.tree_util.tree_leaves(tree)
          if jnp.issubdtype(leaf.dtype, jnp.floating)}


def test_a_bfloat16_search_finds_the_only_useful_op_in_float32_state():
  """test_dnas's toy search in bfloat16: its convolutions run in bfloat16,
  everything it keeps is float32, and it finds the same op."""
  model = ToyNet()
  cfg = _dnas_config(alpha_lr=0.01)
  schedule = dnas_steps.weight_schedule(cfg, 150)
  wtx, atx = dnas_steps.weight_optimizer(cfg, schedule), dnas_steps.alpha_optimizer(cfg)
  step_fn = dnas_steps.make_train_step(model, "single_level", wtx, atx, schedule,
                                       cfg.weight_decay, compute_dtype="bfloat16")
  weights, alphas = _init(model, jax.random.key(0))
  state = dnas_steps.DnasState(jnp.zeros((), jnp.int32), weights, alphas,
                               wtx.init(weights), atx.init(alphas))
  jaxpr = str(jax.make_jaxpr(step_fn)(state, toy_batch(jax.random.key(1)), None))
  convs = [line for line in jaxpr.splitlines() if "conv_general_dilated[" in line]
  assert convs and all(":bf16[" in line for line in convs)
  step = jax.jit(step_fn)
  for i in range(150):
    state, metrics = step(state, toy_batch(jax.random.key(100 + i)), None)
  assert _dtypes(state) == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32
  probs = jax.nn.softmax(state.alphas[0])
  assert TOY_OPS[int(jnp.argmax(probs))] == "nor_conv_3x3", probs
  assert float(metrics["accuracy"]) > 0.9


def test_a_float32_step_is_unchanged_by_the_precision_layer():
  model = ToyNet()
  assert precision.in_dtype(model, "float32") is model
  assert precision.in_dtype(model, None) is model
  with pytest.raises(ValueError, match="float16"):
    precision.dtype_of("float16")


def test_a_bfloat16_retraining_step_keeps_float32_parameters_and_statistics():
  """One step of a NAS-Bench-201 retraining network (BatchNorm with running
  statistics) in bfloat16: its convolutions in bfloat16, its parameters,
  statistics and optimiser state float32 and finite, its loss near a fresh
  10-class network's ln 10, and the evaluator answers."""
  model = networks.build_network(genotypes.load_genotype(ARCH), 10, nb201_channels=4,
                                 nb201_cells_per_stage=1)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 8, 8, 3), np.uint8)
  labels = rng.integers(0, 10, 32).astype(np.int32)
  mesh = parallel.make_mesh(jax.devices()[:1])
  split = data_lib.to_device(images, labels, parallel.replicated(mesh))
  spec = _tiny_spec(model, image_shape=(8, 8, 3), drop_path=0.0, auxiliary_weight=0.0,
                    compute_dtype="bfloat16")
  prog = retrain_steps.program(spec, mesh)
  state = prog.init(jax.random.key(0))
  convs = [line for line in str(jax.make_jaxpr(prog.train_step)(state, split)).splitlines()
           if "conv_general_dilated[" in line]
  assert convs and all(":bf16[" in line for line in convs)
  after = jax.device_get(prog.train_step(state, split))
  chex.assert_tree_all_finite((after.params, after.batch_stats))
  assert _dtypes((after.params, after.batch_stats, after.opt_state)) == {jnp.dtype(jnp.float32)}
  assert 1.5 < float(after.metrics["loss"]) < 3.5
  accuracy = prog.evaluator.evaluate((after.params, after.batch_stats), split, 16)["accuracy"]
  assert 0.0 <= accuracy <= 1.0


def test_the_cost_model_traces_the_dtype_that_runs():
  """The cost model traces the bfloat16 program when that is what runs:
  fewer bytes than float32's, though not half (BatchNorm's statistics and
  the float32 weights, gradients and momentum are counted as they are),
  its convolutions in bfloat16."""
  space = spaces.make_space("nb201", ops="none,skip_connect,nor_conv_3x3")
  cfg = config_defaults.base_config().supernet
  cfg.update(channels=4, cells_per_stage=1)
  traced = {}
  for dtype in ("float32", "bfloat16"):
    cfg.compute_dtype = dtype
    model = cost_model.trace_cost_model(space, cfg, 10, (8, 8, 3), 16)
    traced[dtype] = model.traced(np.ones((space.num_choice_points, space.max_ops), bool))
  assert 0.5 * traced["float32"] < traced["bfloat16"] < traced["float32"]
  net = cost_model.supernet_lib.build_supernet(space, space.full_subspace(), cfg, 10)
  seen = []
  cost_model.network_cost(net, space.full_subspace(), (8, 8, 3), 16, compute_dtype="bfloat16",
                          intercept=lambda f, args, kwargs, context: seen.append(
                              args[0].dtype if args and hasattr(args[0], "dtype") else None)
                          or f(*args, **kwargs))
  assert set(seen) - {None} == {jnp.dtype(jnp.bfloat16)}   # (every module's input)


def test_auto_picks_bfloat16_on_gpu_and_tpu_and_float32_on_the_cpu():
  config = train.add_train_config(config_defaults.base_config())
  for backend, expected in (("cpu", "float32"), ("gpu", "bfloat16"), ("tpu", "bfloat16")):
    resolved, options = performance.resolve(config, backend=backend)
    assert resolved.supernet.compute_dtype == expected
    assert options["supernet.compute_dtype"] == {"value": expected, "picked": True}
    resolved, options = performance.resolve(config, "train", backend=backend)
    assert resolved.train.compute_dtype == expected
  config.supernet.compute_dtype = "float32"   # (set: kept)
  resolved, options = performance.resolve(config, backend="gpu")
  assert options["supernet.compute_dtype"] == {"value": "float32", "picked": False}
  config.task = "agents"
  config.supernet.compute_dtype = "auto"
  resolved, options = performance.resolve(config, backend="gpu")
  assert resolved.supernet.compute_dtype == "float32"
  assert "supernet.compute_dtype" not in options
