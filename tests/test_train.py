"""Final training: published genotypes, faithful network sizes, a retrain on
digits, exact resume, clear errors."""
import importlib.util
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import conftest
from radars_jax import checkpointing
from radars_jax import config_defaults
from radars_jax import data as data_lib
from radars_jax.nas import genotypes
from radars_jax.retrain import networks
from radars_jax.retrain import steps as steps_lib
from radars_jax import parallel
from radars_jax.retrain import train
from radars_jax.errors import UserError

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
# The NAS-Bench-201 table is shared data beside the repository, not in it.
NB201_TABLE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                            "data", "nb201_cifar10.csv"))
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _config_file(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.progress_bar = False
  return config


def _weights(genotype, auxiliary=False, image_shape=(32, 32, 3), **kwargs):
  model = networks.build_network(genotype, 10, auxiliary=auxiliary, **kwargs)
  params = networks.abstract_variables(model, image_shape)["params"]
  return networks.count_weights(params, include_auxiliary=False), networks.count_weights(params)


# ---------------------------------------------------------------------------
# Genotypes and networks (shapes only: nothing is compiled)
# ---------------------------------------------------------------------------

def test_published_genotypes_load_by_name():
  for name in genotypes.GENOTYPE_NAMES:
    g = genotypes.load_genotype(name)
    assert g == genotypes.check_genotype(g)
    if name == "MOBILENET_V2_LIKE":
      # MobileNetV2's depths per stage, every block MBConv 3x3 x6
      depths = [sum(op != "none" for op in stage) for stage in
                np.split(g["blocks"], np.cumsum(g["stage_blocks"])[:-1])]
      assert depths == [2, 3, 4, 3, 3, 1]
      assert set(g["blocks"]) == {"mbconv_3x3_e6", "none"}
      continue
    assert g["space"] == "darts" and len(g["normal"]) == 8 and len(g["reduce"]) == 8
    assert g["normal_concat"] == [2, 3, 4, 5] == g["reduce_concat"]
  v2 = genotypes.load_genotype("DARTS_V2")
  assert v2["normal"][-1] == ["dil_conv_3x3", 2] and v2["reduce"][-1] == ["max_pool_3x3", 1]
  v2["normal"][0][0] = "changed"  # a copy: the published one stays intact
  assert genotypes.DARTS_V2["normal"][0][0] == "sep_conv_3x3"


def test_load_genotype_from_files_and_arch_strings(tmp_path):
  path = tmp_path / "genotype.json"
  path.write_text(json.dumps(genotypes.PC_DARTS))
  assert genotypes.load_genotype(str(path)) == genotypes.PC_DARTS
  summary = tmp_path / "summary.json"  # a search summary holds it under "genotype"
  summary.write_text(json.dumps({"val_accuracy": 0.5, "genotype": genotypes.DARTS_V1}))
  assert genotypes.load_genotype(str(summary)) == genotypes.DARTS_V1
  g = genotypes.load_genotype(ALL_3X3)
  assert g["ops"] == ["nor_conv_3x3"] * 6 and g["arch_str"] == ALL_3X3


def test_bad_genotypes_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="DARTS_V1, DARTS_V2, PC_DARTS"):
    genotypes.load_genotype("DARTS_V3")
  with pytest.raises(UserError, match="no genotype"):
    genotypes.load_genotype(None)
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"normal": [["sep_conv_3x3", 5]] * 8, "reduce": []}))
  with pytest.raises(UserError, match="input in 0..1"):
    genotypes.load_genotype(str(bad))
  bad.write_text("{not json")
  with pytest.raises(UserError, match="cannot read"):
    genotypes.load_genotype(str(bad))
  config = _config_file("digits_train")
  config.genotype = "nope"
  with pytest.raises(UserError, match="unknown genotype 'nope'"):
    train.run_training(config, str(tmp_path / "run"))


def test_darts_network_weight_counts_match_the_papers():
  """DARTS NetworkCIFAR at 36 channels, 20 cells, 10 classes, counted as the
  DARTS code does (without the auxiliary head)."""
  assert _weights(genotypes.DARTS_V2, auxiliary=True) == (3_349_342, 3_825_768)
  assert _weights(genotypes.DARTS_V1)[0] == 3_169_414
  assert _weights(genotypes.PC_DARTS)[0] == 3_634_678          # paper: 3.63M


def test_nb201_network_weight_count_and_flops():
  """NAS-Bench-201 reports 1.5315M weights and 220.11M FLOPs for its
  largest cell (3x3 convolutions on every edge)."""
  model = networks.build_network(genotypes.load_genotype(ALL_3X3), 10)
  info = networks.describe_network(model, (32, 32, 3))
  assert info["weights"] == 1_531_546
  assert info["macs"] == 220_119_680


def test_nb201_ops_leaving_an_all_none_node_run_on_zeros():
  """Node 1 has only a `none` input: it is zeros, and the 3x3 convolution
  leaving it still exists (NAS-Bench-201's InferCell), so building, counting
  and running the network work."""
  dead = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"
  all_none = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  sizes = {}
  for arch in (dead, all_none):
    model = networks.build_network(genotypes.load_genotype(arch), 10, nb201_channels=4,
                                   nb201_cells_per_stage=1)
    sizes[arch] = networks.describe_network(model, (8, 8, 3))["weights"]
    variables = networks.abstract_variables(model, (8, 8, 3))
    logits, _ = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 8, 8, 3)), train=False),
                               variables)
    chex.assert_shape(logits, (2, 10))
  # Two 3x3 convolutions (+ BN scale and bias) per cell, one cell per stage.
  assert sizes[dead] - sizes[all_none] == sum(2 * (9 * c * c + 2 * c) for c in (4, 8, 16))


def test_describe_genotype_darts_v2_on_cifar():
  config = _config_file("cifar_train")
  info = train.describe_genotype(config)
  assert info["weights"] == 3_349_342
  assert info["weights_with_auxiliary"] == 3_825_768
  assert info["flops"] == 528_359_040   # DARTS V2: 528M multiply-adds in the literature
  assert info["network"] == "darts" and info["image_shape"] == [32, 32, 3]


def test_forward_shapes_with_auxiliary_head_and_drop_path():
  model = networks.build_network(genotypes.DARTS_V2, 10, channels=4, layers=3, auxiliary=True)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = networks.abstract_variables(model, (32, 32, 3))
  (logits, aux), _ = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, drop_prob=0.2, mutable=["batch_stats"],
                               rngs={networks.DROP_PATH_RNG: jax.random.key(0)}),
      variables, x)
  chex.assert_shape(logits, (2, 10))
  chex.assert_shape(aux, (2, 10))
  logits, aux = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  chex.assert_shape(logits, (2, 10))
  assert aux is None


def test_auxiliary_head_refuses_maps_smaller_than_8x8():
  """Images of 20 pixels give 5x5 maps at 2/3 depth: pooled to 1x1, the
  head's 2x2 convolution would have no output; 32 pixels give 8x8."""
  model = networks.build_network(genotypes.DARTS_V2, 10, channels=4, layers=3, auxiliary=True)
  with pytest.raises(UserError, match="at least 8x8"):
    networks.abstract_variables(model, (20, 20, 3))
  networks.abstract_variables(model, (32, 32, 3))


def test_drop_path():
  x = jnp.ones((1000, 2, 2, 3))
  chex.assert_trees_all_equal(networks.drop_path(x, 0.0, jax.random.key(0)), x)
  y = networks.drop_path(x, 0.25, jax.random.key(0))
  kept = np.asarray(y[:, 0, 0, 0])
  assert np.all(np.isclose(kept, 0.0) | np.isclose(kept, 1 / 0.75))
  assert 0.2 < np.mean(kept == 0) < 0.3
  assert np.all(np.asarray(y) == np.asarray(y[:, :1, :1, :1]))  # whole examples


# ---------------------------------------------------------------------------
# Config and checks that fail before any compile
# ---------------------------------------------------------------------------

def test_add_train_config_is_idempotent():
  config = config_defaults.base_config()
  train.add_train_config(config)
  config.train.epochs = 7
  config.genotype = "PC_DARTS"
  train.add_train_config(config)
  assert config.train.epochs == 7 and config.genotype == "PC_DARTS"
  assert config.train.layers == 20 and config.train.channels == 36
  assert config.train.batch_size == 96 and config.train.lr == 0.025
  assert config.train.drop_path == 0.2 and config.train.auxiliary_weight == 0.4
  assert config.table is None and "stop_after_steps" not in config.train
  del config.train["cutout"]
  train.add_train_config(config)
  assert config.train.cutout == 16


def test_batch_not_divisible_by_devices_is_a_user_error(tmp_path):
  config = _config_file("digits_train")
  config.train.batch_size = 4 * jax.device_count() + 1 if jax.device_count() > 1 else 0
  with pytest.raises(UserError, match="train.batch_size"):
    train.run_training(config, str(tmp_path))


def test_nb201_table_entry(tmp_path):
  """The row of the trained cell, from a table written here in the shared
  table's format (columns arch, arch_str, cifar10-val, cifar10-test)."""
  table = tmp_path / "t.csv"
  other_row = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  table.write_text("arch,arch_str,cifar10-val,cifar10-test\n"
                   f"0,{other_row},10.0,10.5\n7,{ALL_3X3},93.5,94.25\n")
  entry = train.nb201_table_entry(str(table), genotypes.load_genotype(ALL_3X3))
  assert entry["arch_str"] == ALL_3X3 and entry["cifar10-test"] == 94.25
  assert entry["cifar10-val"] == 93.5
  other = ALL_3X3.replace("nor_conv_3x3~2", "none~2")
  with pytest.raises(UserError, match="not in table"):
    train.nb201_table_entry(str(table), genotypes.load_genotype(other))


def test_nb201_table_entry_in_the_shared_table():
  """The same on the real NAS-Bench-201 table, where ../shared has it."""
  if not os.path.exists(NB201_TABLE):
    pytest.skip(f"optional: {NB201_TABLE} is not here (shared data, not in the repository)")
  entry = train.nb201_table_entry(NB201_TABLE, genotypes.load_genotype(ALL_3X3))
  assert 0 < entry["cifar10-test"] <= 100 and entry["arch_str"] == ALL_3X3


# ---------------------------------------------------------------------------
# Training on digits: accuracy, outputs, exact resume
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """configs/digits_train.py, uninterrupted (the slow part of this file)."""
  config = _config_file("digits_train")
  workdir = tmp_path_factory.mktemp("digits_uninterrupted")
  return config, workdir, train.run_training(config, str(workdir))


def test_digits_retrain_reaches_95_percent(digits_run):
  config, workdir, result = digits_run
  assert result["test_accuracy"] >= 0.95, result
  assert result["steps"] == config.train.epochs * result["steps_per_epoch"]
  assert result["history"][-1]["test_accuracy"] == result["test_accuracy"]
  saved = json.loads((workdir / "eval.json").read_text())
  for key in ("test_accuracy", "weights", "flops", "epochs", "seconds", "genotype"):
    assert key in saved
  assert saved["genotype"] == genotypes.DARTS_V2 and saved["flops"] > 0
  assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == config.train.epochs
  assert any(f.startswith("events") for f in os.listdir(workdir / "tensorboard"))


def test_training_writes_its_report(digits_run):
  """The end of run_training writes WORKDIR/report/ (radars_jax.report)."""
  _, workdir, _ = digits_run
  report = workdir / "report"
  page = (report / "index.html").read_text()
  assert "Evaluation (retraining)" in page
  for name in ("cell_normal.png", "cell_reduce.png", "curves_train.png", "curves_test.png"):
    assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert f"src='{name}'" in page, name


def test_killed_and_resumed_training_equals_uninterrupted(tmp_path, monkeypatch):
  """Killed between two checkpoints (the step after `stop` raises), then a
  fresh run_training in the same workdir: the same final weights, optimiser
  state and metrics. (In one process the runs share the compiled step,
  `retrain.steps.program`; a new process compiles the same program again.)
  configs/digits_train.py cut to 2 epochs, a checkpoint every 10 steps."""
  config = _config_file("digits_train")
  config.train.update(epochs=2, checkpoint_every_steps=10)
  workdir = tmp_path / "uninterrupted"
  uninterrupted = train.run_training(config, str(workdir))
  killed = tmp_path / "killed"
  every = config.train.checkpoint_every_steps
  stop = every + every // 2   # "killed" between checkpoints
  original_program = steps_lib.program
  monkeypatch.setattr(steps_lib, "program",
                      conftest.killed_after(original_program, "train_step", stop))
  with pytest.raises(conftest.Killed):
    train.run_training(config, str(killed))
  monkeypatch.setattr(steps_lib, "program", original_program)
  assert not (killed / "eval.json").exists()
  with checkpointing.Checkpointer(killed / "checkpoints") as ckpt:
    assert ckpt.all_steps() == [every]
  resumed = train.run_training(config, str(killed))
  assert resumed["resumed_from_step"] == every
  for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "history"):
    assert resumed[key] == uninterrupted[key], key
  step_a, state_a = train.load_trained_state(config, str(workdir))
  step_b, state_b = train.load_trained_state(config, str(killed))
  assert step_a == step_b == uninterrupted["steps"]
  chex.assert_trees_all_equal(state_a.params, state_b.params)
  chex.assert_trees_all_equal(state_a.batch_stats, state_b.batch_stats)
  chex.assert_trees_all_equal(state_a.opt_state, state_b.opt_state)
  # Started again once finished, it trains no further and reports the same.
  again = train.run_training(config, str(killed))
  assert again["test_accuracy"] == uninterrupted["test_accuracy"]
  assert again["resumed_from_step"] == uninterrupted["steps"]


# ---------------------------------------------------------------------------
# Drop path and the auxiliary head in the train step; one and four devices
# ---------------------------------------------------------------------------

# Two nodes per cell of cheap ops (pools; skip_connect is the identity in a
# normal cell and a factorized reduction, with weights, in a reduction cell).
TINY_DARTS = genotypes.check_genotype({
    "normal": [["max_pool_3x3", 0], ["skip_connect", 1], ["avg_pool_3x3", 1],
               ["skip_connect", 2]], "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["skip_connect", 1], ["avg_pool_3x3", 2],
               ["max_pool_3x3", 1]], "reduce_concat": [2, 3]})
TINY_IMAGE = (32, 32, 3)   # 8x8 maps at 2/3 depth: the smallest the auxiliary head takes


def _tiny_darts_model():
  return networks.build_network(TINY_DARTS, 10, channels=4, layers=3, auxiliary=True)


def _paths_dropped_in_training(genotype, layers):
  """Ops drop path applies to (all but the stride-1 skip_connects)."""
  count = 0
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3)
    cell = genotype["reduce" if reduction else "normal"]
    count += sum(1 for op, src in cell if not (op == "skip_connect"
                                               and not (reduction and src < 2)))
  return count


def test_drop_path_zeroes_whole_paths_of_training_cells_only(monkeypatch):
  """In training every non-identity op's output is zeroed per example with
  the given probability (each op its own draw) and the rest scaled by
  1 / (1 - p); at evaluation, or with no probability, nothing is dropped."""
  calls = []
  original = networks.drop_path

  def recording(x, drop_prob, key):
    y = original(x, drop_prob, key)
    calls.append((x, y))
    return y

  monkeypatch.setattr(networks, "drop_path", recording)
  model = _tiny_darts_model()
  x = jax.random.normal(jax.random.key(1), (64, *TINY_IMAGE))
  variables = jax.jit(lambda x: model.init(   # (one program, not one per weight)
      {"params": jax.random.key(0), networks.DROP_PATH_RNG: jax.random.key(0)}, x,
      train=False))(x[:1])

  def forward(variables, x, prob, train=True):
    calls.clear()
    model.apply(variables, x, train=train, drop_prob=prob, mutable=["batch_stats"],
                rngs={networks.DROP_PATH_RNG: jax.random.key(2)})
    return list(calls)

  pairs = jax.device_get(jax.jit(forward)(variables, x, 0.4))
  assert len(pairs) == _paths_dropped_in_training(TINY_DARTS, 3) == 10
  masks = []
  for inputs, outputs in pairs:
    kept = np.abs(outputs).reshape(len(x), -1).max(-1) > 0
    np.testing.assert_allclose(outputs[kept], inputs[kept] / 0.6, rtol=1e-5, atol=1e-6)
    assert not np.any(outputs[~kept])   # whole examples
    masks.append(kept)
  masks = np.stack(masks)
  assert 0.3 < 1 - masks.mean() < 0.5                 # p = 0.4 of 640 draws
  assert len({m.tobytes() for m in masks}) == len(masks)   # a draw per op
  jax.eval_shape(lambda v, x: forward(v, x, 0.4, train=False), variables, x)
  assert not calls
  jax.eval_shape(lambda v, x: forward(v, x, None), variables, x)
  assert not calls


def _tiny_spec(model, **kwargs):
  fields = dict(model=model, image_shape=TINY_IMAGE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4),
                num_examples=32, batch_size=8, steps_per_epoch=4, epochs=2, lr=0.1,
                lr_min=0.0, momentum=0.9, weight_decay=0.0, grad_clip=1e9, drop_path=0.8,
                auxiliary_weight=0.4, crop_padding=0, flip=False, cutout=0)
  fields.update(kwargs)
  return steps_lib.TrainSpec(**fields)


def test_train_step_drop_path_and_auxiliary_loss_on_one_and_four_devices():
  """One train step in epoch 1 (drop path at 0.8 * 1/2), against the loss and
  gradient written out here (main loss + 0.4 x the auxiliary head's, paths
  dropped with the step's key), on four devices and on one."""
  model = _tiny_darts_model()
  spec = _tiny_spec(model)
  assert spec.drop_prob(3) == 0.0 and spec.drop_prob(4) == pytest.approx(0.4)
  assert _tiny_spec(model, drop_path=0.0).drop_prob(4) is None
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, *TINY_IMAGE), np.uint8)
  labels = rng.integers(0, 10, 32).astype(np.int32)
  step = 4   # first step of epoch 1

  results = {}
  for devices in (jax.devices()[:4], jax.devices()[:1]):
    mesh = parallel.make_mesh(devices)
    prog = steps_lib.program(spec, mesh)
    state = prog.init(jax.random.key(0)).replace(step=jnp.asarray(step, jnp.int32))
    split = data_lib.to_device(images, labels, parallel.replicated(mesh))
    before = jax.device_get(state)
    after = jax.device_get(prog.train_step(state, split))
    results[len(devices)] = (before, after)

  before, after = results[4]
  key = before.key
  idx = data_lib.batch_indices(jax.random.fold_in(key, steps_lib._DATA), step, 32, 8)  # pylint: disable=protected-access
  x = data_lib.normalise(images[np.asarray(idx)], spec.mean, spec.std)
  drop_key = jax.random.fold_in(jax.random.fold_in(key, steps_lib._DROP_PATH), step)  # pylint: disable=protected-access

  def losses(params):
    (logits, aux), _ = model.apply({"params": params, "batch_stats": before.batch_stats}, x,
                                   train=True, drop_prob=0.4, mutable=["batch_stats"],
                                   rngs={networks.DROP_PATH_RNG: drop_key})
    ce = optax.softmax_cross_entropy_with_integer_labels
    return ce(logits, labels[np.asarray(idx)]).mean(), ce(aux, labels[np.asarray(idx)]).mean()

  def total(params, weight):
    main, aux = losses(params)
    return main + weight * aux

  reference = jax.jit(lambda params, weight: (losses(params), jax.grad(total)(params, weight)))
  (main, aux), grads = reference(before.params, 0.4)
  assert float(after.metrics["loss"]) == pytest.approx(float(main + 0.4 * aux), rel=1e-5)
  # SGD's first step from a fresh momentum: params - lr * grad, at the
  # optimiser's own step count (0 here: its schedule's first rate).
  lr = float(spec.learning_rate(0))
  expected = jax.tree_util.tree_map(lambda p, g: p - lr * g, before.params, grads)
  chex.assert_trees_all_close(after.params, expected, atol=1e-6, rtol=1e-4)
  # The head's loss reaches the cells below it: without it the update differs.
  _, grads_main = reference(before.params, 0.0)
  cell0 = lambda tree: np.concatenate(  # pylint: disable=unnecessary-lambda-assignment
      [np.ravel(a) for a in jax.tree_util.tree_leaves(tree["cell_0"])])
  assert not np.allclose(cell0(grads), cell0(grads_main), atol=1e-6)
  # One device: the same step (float rounding of the sharded sums).
  chex.assert_trees_all_close(results[1][1].params, after.params, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(results[1][1].batch_stats, after.batch_stats, atol=1e-6,
                              rtol=1e-5)
  assert float(results[1][1].metrics["loss"]) == pytest.approx(float(after.metrics["loss"]),
                                                               rel=1e-5)
