"""Tests of radars_jax.data: loading (tfds on mock data and its real
preparation from tiny CIFAR archives, digits, synthetic), index bookkeeping
and the jittable augmentation helpers."""
import io
import os
import tarfile

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from radars_jax import data
from radars_jax.errors import UserError


def make_config(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(fields)


# ---------------------------------------------------------------------------
# tfds (CIFAR)
# ---------------------------------------------------------------------------

def test_cifar10_loads_through_tfds_on_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  config = make_config(name="cifar10", data_dir=None, download=False,
                       train_size=10, test_size=None)
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load_dataset(config)
  chex.assert_shape(dataset.train_images, (10, 32, 32, 3))
  chex.assert_shape(dataset.test_images, (12, 32, 32, 3))
  chex.assert_shape(dataset.train_labels, (10,))
  chex.assert_shape(dataset.test_labels, (12,))
  chex.assert_type([dataset.train_images, dataset.test_images], np.uint8)
  chex.assert_type([dataset.train_labels, dataset.test_labels], np.int32)
  for labels in (dataset.train_labels, dataset.test_labels):
    assert labels.min() >= 0 and labels.max() < 10
  assert dataset.name == "cifar10" and dataset.num_classes == 10
  assert dataset.image_shape == (32, 32, 3)
  assert (dataset.mean, dataset.std) == data.CIFAR_STATS["cifar10"]


# The CIFAR binary archives as tfds's cifar builders read them
# (tensorflow_datasets/image_classification/cifar.py): a folder of .bin
# files, each record the label bytes then 3072 pixel bytes (the 32x32 red
# plane, then green, then blue), and one text file of class names per label
# byte. Examples per file here: a few, so that preparing takes seconds.
CIFAR_LAYOUT = {
    "cifar10": dict(folder="cifar-10-batches-bin",
                    train=[f"data_batch_{i}.bin" for i in range(1, 6)],
                    test=["test_batch.bin"],
                    labels=[("batches.meta.txt", 10)]),
    "cifar100": dict(folder="cifar-100-binary", train=["train.bin"], test=["test.bin"],
                     labels=[("coarse_label_names.txt", 20),
                             ("fine_label_names.txt", 100)]),
}
EXAMPLES_PER_FILE = {"cifar10": (2, 3), "cifar100": (7, 3)}  # (train file, test file)


def write_cifar_archive(path, name: str, seed: int) -> dict:
  """Writes a tiny CIFAR binary archive (.tar.gz) to `path`; returns each
  split's examples as {image bytes (HWC): label} (tfds shuffles the order)."""
  layout = CIFAR_LAYOUT[name]
  rng = np.random.default_rng(seed)
  per_file = dict(zip(("train", "test"), EXAMPLES_PER_FILE[name]))
  written = {"train": {}, "test": {}}
  with tarfile.open(path, "w:gz") as archive:
    def add(filename, content: bytes):
      info = tarfile.TarInfo(f"{layout['folder']}/{filename}")
      info.size = len(content)
      archive.addfile(info, io.BytesIO(content))

    for filename, num_classes in layout["labels"]:
      add(filename, "".join(f"class_{i}\n" for i in range(num_classes)).encode())
    for split in ("train", "test"):
      for filename in layout[split]:
        records = []
        for _ in range(per_file[split]):
          # One byte per label file; the last is the label tfds returns.
          labels = [rng.integers(n) for _, n in layout["labels"]]
          planes = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
          records.append(bytes(labels) + planes.tobytes())
          written[split][planes.transpose(1, 2, 0).tobytes()] = int(labels[-1])
        add(filename, b"".join(records))
  return written


def accept_archive_as_registered(monkeypatch, tfds, archive, name: str):
  """tfds checks a manually given archive against the registered size and
  sha256 of the real 170 MB file: for `archive` (the test's tiny one),
  report those, so that it stands in for the real one."""
  checksums = tfds.core.download.checksums
  registered = {info.filename: info for info in checksums.get_all_url_infos().values()}
  compute_url_info = checksums.compute_url_info

  def registered_info_for_the_test_archive(path, *args, **kwargs):
    if os.path.realpath(path) == os.path.realpath(archive):
      return registered[data.CIFAR_ARCHIVES[name]]
    return compute_url_info(path, *args, **kwargs)

  monkeypatch.setattr(checksums, "compute_url_info", registered_info_for_the_test_archive)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_tfds_prepares_cifar_from_an_archive_offline(name, tmp_path, monkeypatch):
  # The real preparation (tfds's download manager, extraction, the cifar
  # builder, record writing), from an archive in the CIFAR binary format
  # given as data.archive, as a user without network does.
  tfds = pytest.importorskip("tensorflow_datasets")
  archive = tmp_path / data.CIFAR_ARCHIVES[name]
  written = write_cifar_archive(archive, name, seed=len(name))
  accept_archive_as_registered(monkeypatch, tfds, archive, name)
  data_dir = tmp_path / "tfds"
  config = make_config(name=name, data_dir=str(data_dir), archive=str(archive),
                       download=False)
  dataset = data.load_dataset(config)

  per_file = EXAMPLES_PER_FILE[name]
  num_train = len(CIFAR_LAYOUT[name]["train"]) * per_file[0]  # 10 / 7
  num_test = len(CIFAR_LAYOUT[name]["test"]) * per_file[1]    # 3 / 3
  chex.assert_shape([dataset.train_images], (num_train, 32, 32, 3))
  chex.assert_shape([dataset.test_images], (num_test, 32, 32, 3))
  chex.assert_type([dataset.train_images, dataset.test_images], np.uint8)
  chex.assert_type([dataset.train_labels, dataset.test_labels], np.int32)
  for split, images, labels in (("train", dataset.train_images, dataset.train_labels),
                                ("test", dataset.test_images, dataset.test_labels)):
    read = {image.tobytes(): int(label) for image, label in zip(images, labels)}
    assert read == written[split]
  assert dataset.num_classes == data.CIFAR_NUM_CLASSES[name]
  # Prepared once: a second load reads data_dir without the archive.
  again = data.load_dataset(make_config(name=name, data_dir=str(data_dir),
                                        download=False, train_size=2))
  chex.assert_trees_all_equal(again.train_images, dataset.train_images[:2])


def test_archive_that_is_not_a_file_is_one_line_user_error(tmp_path):
  config = make_config(name="cifar10", data_dir=str(tmp_path),
                       archive=str(tmp_path / "missing.tar.gz"))
  with pytest.raises(UserError) as raised:
    data.load_dataset(config)
  message = str(raised.value)
  assert "\n" not in message and "data.archive" in message and "missing.tar.gz" in message
  with pytest.raises(UserError):
    data.load_dataset(make_config(name="digits", archive=str(tmp_path)))


def test_archive_with_the_wrong_checksum_is_one_line_user_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  archive = tmp_path / "cifar10.tar.gz"
  write_cifar_archive(archive, "cifar10", seed=0)
  config = make_config(name="cifar10", data_dir=str(tmp_path / "tfds"),
                       archive=str(archive))
  with pytest.raises(UserError) as raised:
    data.load_dataset(config)
  message = str(raised.value)
  assert "\n" not in message and str(archive) in message
  assert "cifar-10-binary.tar.gz" in message and "sha256" in message


def assert_one_line_missing_dataset_error(error: UserError, name: str, data_dir: str):
  message = str(error)
  assert "\n" not in message
  assert name in message and data_dir in message
  assert "--config.data.archive" in message and data.CIFAR_ARCHIVES[name] in message
  assert "--config.data.data_dir" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_tfds_dataset_without_download_is_one_line_user_error(name, tmp_path):
  pytest.importorskip("tensorflow_datasets")
  config = make_config(name=name, data_dir=str(tmp_path), download=False)
  with pytest.raises(UserError) as raised:
    data.load_dataset(config)
  assert_one_line_missing_dataset_error(raised.value, name, str(tmp_path))
  assert "download=False" in str(raised.value)


def test_failed_tfds_download_is_one_line_user_error(tmp_path, monkeypatch):
  # The download itself fails at once, as requests does offline after its
  # retries; everything before it (the builder, its checksums, the download
  # manager) runs for real.
  tfds = pytest.importorskip("tensorflow_datasets")
  requests = pytest.importorskip("requests")

  def unreachable(self, resource):
    raise requests.exceptions.ConnectionError(f"{resource.url}: network unreachable")

  monkeypatch.setattr(tfds.download.DownloadManager, "_download", unreachable)
  config = make_config(name="cifar10", data_dir=str(tmp_path), download=True)
  with pytest.raises(UserError) as raised:
    data.load_dataset(config)
  assert_one_line_missing_dataset_error(raised.value, "cifar10", str(tmp_path))
  assert "could not download" in str(raised.value)
  assert "ConnectionError" in str(raised.value) and "network unreachable" in str(raised.value)


def test_unknown_dataset_name_lists_known_names():
  with pytest.raises(UserError) as raised:
    data.load_dataset(make_config(name="imagenet"))
  for name in data.DATASET_NAMES:
    assert name in str(raised.value)
  with pytest.raises(UserError):
    data.dataset_spec(make_config(name="imagenet"))


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_split_size_is_user_error(size):
  with pytest.raises(UserError):
    data.load_dataset(make_config(name="digits", train_size=size))


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------

def test_digits_shapes_splits_and_statistics():
  dataset = data.load_dataset(make_config(name="digits"))
  chex.assert_shape(dataset.train_images, (1437, 8, 8, 1))
  chex.assert_shape(dataset.test_images, (360, 8, 8, 1))
  chex.assert_shape([dataset.train_labels], (1437,))
  chex.assert_shape([dataset.test_labels], (360,))
  chex.assert_type([dataset.train_images, dataset.test_images], np.uint8)
  chex.assert_type([dataset.train_labels, dataset.test_labels], np.int32)
  assert dataset.image_shape == (8, 8, 1) and dataset.num_classes == 10
  assert set(dataset.train_labels.tolist()) == set(range(10))
  assert set(dataset.test_labels.tolist()) <= set(range(10))
  assert dataset.train_images.max() == 255 and dataset.train_images.min() == 0
  assert len(dataset.mean) == len(dataset.std) == 1
  assert 0.1 < dataset.mean[0] < 0.5 and 0.2 < dataset.std[0] < 0.5
  assert data.dataset_spec(make_config(name="digits")) == ((8, 8, 1), 10)


def test_digits_is_deterministic_and_sizes_keep_the_first_examples():
  full = data.load_dataset(make_config(name="digits"))
  again = data.load_dataset(make_config(name="digits"))
  chex.assert_trees_all_equal(full.train_images, again.train_images)
  chex.assert_trees_all_equal(full.test_labels, again.test_labels)
  small = data.load_dataset(make_config(name="digits", train_size=20, test_size=7))
  chex.assert_trees_all_equal(small.train_images, full.train_images[:20])
  chex.assert_trees_all_equal(small.test_labels, full.test_labels[:7])
  assert small.mean == full.mean  # statistics of the whole train split


# ---------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------

def test_synthetic_defaults():
  dataset = data.load_dataset(make_config(name="synthetic"))
  chex.assert_shape(dataset.train_images, (256, 8, 8, 3))
  chex.assert_shape(dataset.test_images, (64, 8, 8, 3))
  chex.assert_type([dataset.train_images, dataset.train_labels], [np.uint8, np.int32])
  assert dataset.num_classes == 10 and len(dataset.mean) == 3
  assert set(dataset.train_labels.tolist()) == set(range(10))


def test_synthetic_sizes_from_config_and_determinism():
  config = make_config(name="synthetic", image_size=6, channels=2, num_classes=4,
                       train_size=40, test_size=12, seed=3)
  first, second = data.load_dataset(config), data.load_dataset(config)
  chex.assert_shape(first.train_images, (40, 6, 6, 2))
  chex.assert_shape(first.test_images, (12, 6, 6, 2))
  assert first.num_classes == 4 and first.image_shape == (6, 6, 2)
  assert data.dataset_spec(config) == ((6, 6, 2), 4)
  chex.assert_trees_all_equal(
      (first.train_images, first.train_labels, first.test_images, first.test_labels),
      (second.train_images, second.train_labels, second.test_images, second.test_labels))
  assert (first.mean, first.std) == (second.mean, second.std)
  config.seed = 4
  other = data.load_dataset(config)
  assert not np.array_equal(first.train_images, other.train_images)


def test_synthetic_is_learnable():
  dataset = data.load_dataset(make_config(name="synthetic", seed=1))
  # Nearest class mean, fitted on the train split, scored on the test split.
  train = dataset.train_images.reshape(len(dataset.train_images), -1).astype(np.float32)
  test = dataset.test_images.reshape(len(dataset.test_images), -1).astype(np.float32)
  centres = np.stack([train[dataset.train_labels == c].mean(0)
                      for c in range(dataset.num_classes)])
  distances = ((test[:, None, :] - centres[None]) ** 2).sum(-1)
  accuracy = (distances.argmin(1) == dataset.test_labels).mean()
  assert accuracy > 0.5  # chance is 0.1


def test_bad_synthetic_setting_is_user_error():
  with pytest.raises(UserError):
    data.load_dataset(make_config(name="synthetic", num_classes=1))


# ---------------------------------------------------------------------------
# Host-side index bookkeeping and device placement
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("num_examples", [10, 11])
def test_split_in_halves(num_examples):
  half_a, half_b = data.split_in_halves(num_examples, seed=0)
  assert len(half_a) == num_examples // 2
  assert not set(half_a.tolist()) & set(half_b.tolist())
  assert sorted(half_a.tolist() + half_b.tolist()) == list(range(num_examples))
  again_a, again_b = data.split_in_halves(num_examples, seed=0)
  chex.assert_trees_all_equal((half_a, half_b), (again_a, again_b))
  other_a, _ = data.split_in_halves(num_examples, seed=1)
  assert not np.array_equal(half_a, other_a)


def test_eval_batches_cover_every_example_once():
  assert data.eval_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
  assert data.eval_batches(8, 4) == [(0, 4), (4, 8)]
  covered = [i for start, stop in data.eval_batches(37, 5) for i in range(start, stop)]
  assert covered == list(range(37))


def test_to_device_and_device_split_as_a_pytree():
  images = np.arange(4 * 2 * 2 * 1, dtype=np.uint8).reshape(4, 2, 2, 1)
  labels = np.arange(4)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  for sharding in (None, replicated):
    split = data.to_device(images, labels, sharding)
    chex.assert_type([split.images, split.labels], [jnp.uint8, jnp.int32])
    assert split.num_examples == 4
    gathered = jax.jit(lambda s, i: s.images[i])(split, jnp.array([3, 0]))
    chex.assert_trees_all_equal(gathered, images[[3, 0]])
  assert split.images.sharding.is_fully_replicated


# ---------------------------------------------------------------------------
# Device-side helpers
# ---------------------------------------------------------------------------

def test_batch_indices_cover_an_epoch_without_repeats():
  key = jax.random.key(0)
  num_examples, batch_size = 23, 5  # 4 steps per epoch, 3 examples dropped
  epoch = [np.asarray(data.batch_indices(key, step, num_examples, batch_size))
           for step in range(4)]
  chex.assert_shape(epoch, (batch_size,))
  flat = np.concatenate(epoch)
  assert len(set(flat.tolist())) == 4 * batch_size
  assert flat.min() >= 0 and flat.max() < num_examples
  # Epoch e walks permutation(fold_in(key, e)); the next epoch reshuffles.
  order_1 = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), num_examples))
  chex.assert_trees_all_equal(data.batch_indices(key, 5, num_examples, batch_size),
                              order_1[5:10])
  assert not np.array_equal(np.concatenate(epoch), order_1[:20])


def test_batch_indices_deterministic_and_jittable():
  key = jax.random.key(7)
  jitted = jax.jit(lambda k, s: data.batch_indices(k, s, 50, 8))
  for step in (0, 3, 6, 13):
    eager = data.batch_indices(key, step, 50, 8)
    chex.assert_trees_all_equal(eager, data.batch_indices(key, step, 50, 8))
    chex.assert_trees_all_equal(eager, jitted(key, jnp.int32(step)))
  assert not np.array_equal(jitted(key, jnp.int32(0)), jitted(jax.random.key(8), jnp.int32(0)))
  with pytest.raises(UserError):
    data.batch_indices(key, 0, 4, 8)


def test_normalise():
  images = jnp.array([[[[0, 255]]]], jnp.uint8)  # [1, 1, 1, 2]
  out = data.normalise(images, (0.5, 0.25), (0.5, 0.25))
  chex.assert_type(out, jnp.float32)
  chex.assert_trees_all_close(out, jnp.array([[[[-1.0, 3.0]]]]))


def random_batch(key, shape=(16, 6, 6, 2)):
  return jax.random.normal(key, shape)


def test_random_crop_and_flip_identity_without_pad_or_flip():
  images = random_batch(jax.random.key(0))
  out = data.random_crop_and_flip(jax.random.key(1), images, pad=0, flip=False)
  chex.assert_trees_all_equal(out, images)


def test_random_crop_and_flip_flip_only_mirrors_some_images():
  images = random_batch(jax.random.key(0), (32, 5, 5, 3))
  out = np.asarray(data.random_crop_and_flip(jax.random.key(1), images, pad=0, flip=True))
  images = np.asarray(images)
  same = [np.array_equal(o, i) for o, i in zip(out, images)]
  mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert any(same) and any(mirrored)


def test_random_crop_is_a_window_of_the_zero_padded_image():
  pad = 2
  images = random_batch(jax.random.key(0), (8, 4, 4, 1)) + 10.0  # no zeros inside
  crop = jax.jit(lambda k, x: data.random_crop_and_flip(k, x, pad, False))
  out = np.asarray(crop(jax.random.key(3), images))
  chex.assert_shape(out, images.shape)
  padded = np.pad(np.asarray(images), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = [(y, x) for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
  for o, p in zip(out, padded):
    assert any(np.array_equal(o, p[y:y + 4, x:x + 4]) for y, x in offsets)
  assert not np.array_equal(out, np.asarray(images))  # some example moved


def test_random_crop_and_flip_deterministic_per_key():
  images = random_batch(jax.random.key(0))
  first = data.random_crop_and_flip(jax.random.key(5), images)
  chex.assert_shape(first, images.shape)
  chex.assert_trees_all_equal(first, data.random_crop_and_flip(jax.random.key(5), images))
  assert not np.array_equal(first, data.random_crop_and_flip(jax.random.key(6), images))


def test_cutout_zeroes_one_clipped_square_per_image():
  size = 3
  images = jnp.ones((64, 7, 7, 2), jnp.float32)
  out = np.asarray(jax.jit(lambda k, x: data.cutout(k, x, size))(jax.random.key(0), images))
  chex.assert_shape(out, images.shape)
  assert set(np.unique(out).tolist()) <= {0.0, 1.0}
  assert np.array_equal(out[..., 0], out[..., 1])  # all channels of a pixel
  areas = []
  for image in out[..., 0] == 0:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    assert 1 <= len(rows) <= size and 1 <= len(cols) <= size
    assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
    assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))
    assert image.sum() == len(rows) * len(cols)  # exactly that rectangle
    areas.append(image.sum())
  assert max(areas) == size * size and min(areas) < size * size  # some clipped


def test_cutout_size_zero_is_identity():
  images = random_batch(jax.random.key(0))
  chex.assert_trees_all_equal(data.cutout(jax.random.key(1), images, 0), images)
