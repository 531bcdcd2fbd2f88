"""The ImageNet family read from disk per batch (radars_jax/imagenet.py):
tfds's real preparation of imagenet2012 from tiny archives, the transforms,
batches that are a function of (key, step) read once per process, and a
search and a retraining on `tfds.testing.mock_data`."""
import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import conftest
from radars_jax import config_defaults
from radars_jax import data as data_lib
from radars_jax import imagenet
from radars_jax import parallel
from radars_jax.dnas import search
from radars_jax.dnas import steps as dnas_steps
from radars_jax.errors import UserError
from radars_jax.retrain import steps as retrain_steps
from radars_jax.retrain import train

@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  """ILSVRC2012_img_train.tar (2 synsets of 3 JPEGs) and ILSVRC2012_img_val.tar
  (3 JPEGs), as image-net.org ships them (`experiments/imagenet_input.py`)."""
  path = tmp_path_factory.mktemp("manual")
  conftest.import_experiment("imagenet_input").write_ilsvrc_archives(path, classes=2, per_class=3, val=3, height=40,
                                       width=50)
  return path


def _data_config(name, **fields):
  config = config_defaults.base_config().data
  config.name = name
  config.update(fields)
  return config


def test_imagenet2012_is_prepared_by_tfds_from_the_manual_archives(manual_dir, tmp_path):
  config = _data_config("imagenet2012", manual_dir=str(manual_dir),
                        data_dir=str(tmp_path / "tfds"), image_size=32)
  ds = imagenet.open_dataset(config)
  assert (ds.train.num_examples, ds.test.num_examples, ds.num_classes) == (6, 3, 1000)
  assert ds.image_shape == (32, 32, 3)
  images, labels = ds.train.read(range(6), seed=[0, 0])
  chex.assert_shape(images, (6, 32, 32, 3))
  assert images.dtype == np.uint8 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
  # prepared once: opened again without the archives
  again = imagenet.open_dataset(_data_config("imagenet2012", data_dir=str(tmp_path / "tfds"),
                                             image_size=32))
  np.testing.assert_array_equal(again.test.read(range(3))[0], ds.test.read(range(3))[0])


def test_imagenet2012_prepared_as_tfrecords_is_refused_in_one_line(manual_dir, tmp_path):
  tfds.builder("imagenet2012", data_dir=str(tmp_path)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  with pytest.raises(UserError) as raised:
    imagenet.open_dataset(_data_config("imagenet2012", data_dir=str(tmp_path)))
  assert "TFRecord" in str(raised.value) and "\n" not in str(raised.value)


def test_imagenet2012_without_archives_is_one_line_naming_manual_dir(tmp_path):
  config = _data_config("imagenet2012", data_dir=str(tmp_path / "empty"))
  with pytest.raises(UserError) as raised:
    imagenet.open_dataset(config)
  message = str(raised.value)
  assert "--config.data.manual_dir=DIR" in message and "\n" not in message
  with pytest.raises(UserError, match="not a directory"):
    imagenet.manual_dir(_data_config("imagenet2012", manual_dir=str(tmp_path / "none")))
  with pytest.raises(UserError, match="imagenet2012 only"):
    imagenet.manual_dir(_data_config("imagenette", manual_dir=str(tmp_path)))


def test_random_resized_crop_stays_inside_and_covers_the_scale_range():
  rng = np.random.default_rng(0)
  areas = []
  for _ in range(200):
    top, left, h, w = imagenet.random_resized_crop_box(rng, 60, 80)
    assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
    areas.append(h * w / (60 * 80))
  assert min(areas) < 0.2 and max(areas) > 0.8
  # a strip too thin for any 3/4-4/3 crop falls back to its largest centred one
  assert imagenet.random_resized_crop_box(np.random.default_rng(0), 4, 400,
                                          scale=(0.99, 1.0)) == (0, 197, 4, 5)


def test_transforms_shapes_and_the_centre_crop():
  image = np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8)
  out = imagenet.train_transform(image, np.random.default_rng(1), 24)
  chex.assert_shape(out, (24, 24, 3))
  np.testing.assert_array_equal(
      out, imagenet.train_transform(image, np.random.default_rng(1), 24))
  # short side 256 = 224 / 0.875: no resize, the centre 224 x 224
  np.testing.assert_array_equal(imagenet.eval_transform(image, 224),
                                image[16:240, 38:262])


def test_a_grey_record_is_read_as_three_channels():
  grey = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40, 1)
  split = imagenet.RecordSplit([{"image": grey, "label": 3}], np.arange(1), 16, True, 1)
  images, labels = split.read([0])
  chex.assert_shape(images, (1, 16, 16, 3))
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  assert labels.tolist() == [3]


@pytest.fixture
def mock_imagenette():
  """imagenette on tfds's mock data, for one test (the mock is on while the
  fixture is: every tfds dataset is mocked till its test ends)."""
  with tfds.testing.mock_data(num_examples=48):
    yield imagenet.open_dataset(_data_config("imagenette", image_size=16, reader_threads=2))


def test_batches_are_a_function_of_key_and_step(mock_imagenette):
  mesh = parallel.make_mesh()
  split = mock_imagenette.train
  walked = dnas_steps.make_batch_fn(split, 8, imagenet.IMAGENET_STATS[0],
                                    imagenet.IMAGENET_STATS[1], pad=0, flip=False,
                                    sharding=parallel.batch_sharded(mesh))
  key = jax.random.key(3)
  batches = [walked(key, step) for step in range(4)]   # each next one read ahead
  fresh = dnas_steps.make_batch_fn(split, 8, imagenet.IMAGENET_STATS[0],
                                   imagenet.IMAGENET_STATS[1], pad=0, flip=False,
                                   sharding=parallel.batch_sharded(mesh))
  resumed = fresh(key, 3)   # a resumed run's first batch
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(batches[3]))
  chex.assert_shape(batches[0]["image"], (8, 16, 16, 3))
  assert not np.array_equal(batches[0]["image"], batches[1]["image"])
  rows = np.asarray(data_lib.batch_indices(key, 2, split.num_examples, 8))
  expected = [int(split.source[int(split.indices[r])]["label"]) for r in rows]
  np.testing.assert_array_equal(batches[2]["label"], expected)


class CountingSource:
  """A record source that counts the records read."""

  def __init__(self, source):
    self.source, self.reads = source, 0

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads += 1
    return self.source[i]


def test_each_row_of_a_sharded_batch_is_read_once(mock_imagenette):
  assert len(jax.devices()) >= 4, "tests run with 4 host devices (conftest)"
  counting = CountingSource(mock_imagenette.train.source)
  split = imagenet.RecordSplit(counting, mock_imagenette.train.indices, 16, True, 2)
  mesh = parallel.make_mesh(jax.devices()[:4])
  batches = split.batch_fn(8, (0.5,) * 3, (0.25,) * 3, pad=0, flip=False,
                           sharding=parallel.batch_sharded(mesh))
  batch = batches(jax.random.key(0), 0)
  assert batch["image"].sharding.is_equivalent_to(parallel.batch_sharded(mesh), 4)
  batches._pending[1].result()   # the next step's batch, read ahead
  assert counting.reads == 16
  counting.reads = 0
  evaluated = list(split.subset(np.arange(16)).eval_batches(8, parallel.batch_sharded(mesh)))
  assert [start for start, _, _ in evaluated] == [0, 8] and counting.reads == 16
  assert evaluated[1][1].sharding.is_equivalent_to(parallel.batch_sharded(mesh), 4)
  # one batch per sample, each split over its row of the (sample, data) mesh
  sample_mesh = parallel.make_sample_mesh(2, jax.devices()[:4])
  stacked = split.batch_fn(8, (0.5,) * 3, (0.25,) * 3, pad=0, flip=False,
                           sharding=parallel.sample_batch_sharded(sample_mesh), stacked=True)
  keys = jax.random.split(jax.random.key(0), 2)
  both = stacked(keys, 0)
  chex.assert_shape(both["image"], (2, 8, 16, 16, 3))
  alone = batches(keys[1], 0)
  np.testing.assert_allclose(both["image"][1], alone["image"], atol=1e-6)


def test_evaluation_from_disk_equals_evaluation_on_device(mock_imagenette):
  mesh = parallel.make_mesh()
  split = mock_imagenette.test.subset(np.arange(10))
  images, labels = split.read(range(10))
  on_device = data_lib.to_device(images, labels, parallel.replicated(mesh))
  weights = jax.random.normal(jax.random.key(0), (3, 10))
  evaluator = dnas_steps.Evaluator(lambda w, x: x.mean((1, 2)) @ w, mesh, (0.4,) * 3,
                                   (0.2,) * 3)
  from_disk = evaluator.evaluate(weights, split, 4)
  assert from_disk == pytest.approx(evaluator.evaluate(weights, on_device, 4), rel=1e-6)


def _tiny(config):
  config.progress_bar = False
  config.data.update(name="imagenette", image_size=16, holdout_size=8, batch_size=8,
                     eval_batch_size=8, reader_threads=2, crop_padding=0)
  return config


def _tiny_training(genotype: str):
  config = _tiny(config_defaults.base_config())
  train.add_train_config(config)
  config.mode = "train"
  config.genotype = genotype
  config.data.test_size = 8
  config.train.update(batch_size=8, epochs=1, nb201_channels=4, nb201_cells_per_stage=1,
                      cutout=0, drop_path=0.0, auxiliary_weight=0.0, label_smoothing=0.1,
                      ema_decay=0.5, checkpoint_every_steps=2)
  return config


def test_retraining_from_disk_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
  """Killed after step 3 (its checkpoint at step 2), then run again: the
  same final weights, moving average and test accuracy as an uninterrupted
  run (the batches are read again by step, not from where a reader was)."""
  config = _tiny_training("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|"
                          "nor_conv_1x1~1|nor_conv_3x3~2|")
  with tfds.testing.mock_data(num_examples=40):
    uninterrupted = train.run_training(config, str(tmp_path / "whole"))
    original_program = retrain_steps.program
    monkeypatch.setattr(retrain_steps, "program",
                        conftest.killed_after(original_program, "train_on_batch", 3))
    with pytest.raises(conftest.Killed):
      train.run_training(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(retrain_steps, "program", original_program)
    resumed = train.run_training(config, str(tmp_path / "resumed"))
  assert resumed["resumed_from_step"] == 2
  assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
  assert resumed["test_loss"] == pytest.approx(uninterrupted["test_loss"], rel=1e-6)
  _, whole = train.load_trained_state(config, str(tmp_path / "whole"))
  _, again = train.load_trained_state(config, str(tmp_path / "resumed"))
  chex.assert_trees_all_close((again.params, again.ema), (whole.params, whole.ema), atol=1e-6)


def test_a_search_and_a_retraining_run_on_imagenette(tmp_path):
  config = _tiny(config_defaults.base_config())
  config.method = "single_darts"
  config.space.name = "nb201"
  config.supernet.channels = 4
  config.supernet.cells_per_stage = 1
  config.dnas.epochs = 1
  config.dnas.derived_finetune_steps = 0
  with tfds.testing.mock_data(num_examples=40):
    summary = search.run_search(config, str(tmp_path / "search"))
    assert summary["dataset"] == "imagenette"
    genotype = json.loads((tmp_path / "search" / "genotype.json").read_text())
    trained = _tiny_training(str(tmp_path / "search" / "genotype.json"))
    result = train.run_training(trained, str(tmp_path / "train"))
  assert result["genotype"] == genotype and result["steps"] == 5   # 40 mock examples, batches of 8
  assert 0.0 <= result["test_accuracy"] <= 1.0
  step, state = train.load_trained_state(trained, str(tmp_path / "train"))
  assert step == 5
  # the moving average is what was tested, and it is not the last weights
  assert not np.allclose(jax.tree_util.tree_leaves(state.ema["params"])[0],
                         jax.tree_util.tree_leaves(state.params)[0])
  chex.assert_trees_all_equal(retrain_steps.evaluated_weights(state),
                              (state.ema["params"], state.ema["batch_stats"]))


@pytest.mark.parametrize("name", sorted(imagenet.DATASETS))
def test_every_dataset_opens_at_its_size(name):
  config = _data_config(name, reader_threads=1)
  with tfds.testing.mock_data(num_examples=8):
    ds = imagenet.open_dataset(config)
  shape, classes = data_lib.dataset_spec(config)
  assert ds.image_shape == shape and ds.num_classes == classes
  assert shape == {"imagenet2012": (224, 224, 3), "imagenette": (224, 224, 3),
                   "imagenet_resized/32x32": (32, 32, 3),
                   "imagenet_resized/64x64": (64, 64, 3)}[name]
  images, _ = ds.test.read(range(2))
  chex.assert_shape(images, (2, *shape))


def test_two_processes_each_read_their_half_of_a_batch(manual_dir, tmp_path):
  """Two processes of 2 CPU devices each, one mesh of 4: the first prepares
  the dataset while the other waits; each reads the 2 rows of a batch of 4
  its devices hold (and 2 of the next, read ahead), and the batch they hold
  together is the one process's batch of 4."""
  from test_multiprocess import env_with_devices, free_port, wait_all  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path / "tfds")
  coordinator = f"127.0.0.1:{free_port()}"
  runner = Path(__file__).with_name("record_reader_process.py")
  logs = [open(tmp_path / f"p{i}.log", "w", encoding="utf-8") for i in range(2)]  # pylint: disable=consider-using-with
  procs = [subprocess.Popen([sys.executable, str(runner), coordinator, str(i), data_dir,
                             str(manual_dir), str(tmp_path / f"p{i}.json")], cwd=runner.parent,
                            env=env_with_devices(2), stdout=logs[i], stderr=subprocess.STDOUT)
           for i in range(2)]
  codes = wait_all(procs, 240)
  for log in logs:
    log.close()
  assert codes == [0, 0], (tmp_path / "p0.log").read_text()[-3000:]
  train = imagenet.open_dataset(_data_config("imagenet2012", data_dir=data_dir, image_size=16,
                                             download=False, reader_threads=1)).train
  mesh = parallel.make_mesh(jax.devices()[:4])
  reference = train.batch_fn(4, (0.5,) * 3, (0.25,) * 3, pad=0, flip=False,
                             sharding=parallel.batch_sharded(mesh))(jax.random.key(0), 0)
  for i in range(2):
    result = json.loads((tmp_path / f"p{i}.json").read_text())
    assert result["devices"] == 4 and result["reads"] == 4
    np.testing.assert_allclose(result["image"], reference["image"], atol=1e-6)
    np.testing.assert_array_equal(result["label"], reference["label"])
