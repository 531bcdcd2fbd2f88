"""Image datasets as numpy arrays, and the pure JAX helpers that batch,
augment and normalise them inside jitted steps.

Host side (numpy, loaded once):
- `load_dataset(data_config) -> ImageDataset`: CIFAR-10/100 through
  tensorflow-datasets (downloaded, or prepared from a local archive file),
  scikit-learn's 8x8 handwritten digits, or a deterministic synthetic set;
  all as uint8 [N, H, W, C] images and int32 labels, with per-channel
  mean/std.
- `split_in_halves`, `eval_batches`: index bookkeeping.
- `to_device` puts a split on the accelerator(s) as a `DeviceSplit`, so that
  every batch is gathered inside jit with no host transfer per step.
The ImageNet family does not fit on a device: `radars_jax.imagenet` reads
it from disk batch by batch, behind the same `(key, step) -> batch` contract.

Device side (pure, jittable, explicit PRNG keys):
- `batch_indices(key, step, ...)`: the shuffled batch of a global step, a
  function of (key, step) only, so a resumed run sees the same batches as an
  uninterrupted one.
- `normalise`, `random_crop_and_flip` (DARTS augmentation), `cutout`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile

import flax
import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import imagenet
from radars_jax.errors import UserError

# Held on device whole (this module), or read from disk per batch (`imagenet`).
IN_MEMORY_DATASETS = ("cifar10", "cifar100", "digits", "synthetic")
DATASET_NAMES = IN_MEMORY_DATASETS + tuple(imagenet.DATASETS)

# Per-channel statistics of the CIFAR training splits in [0, 1] pixel scale,
# the values DARTS normalises with.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# The file tfds's builder of each dataset downloads (its registered name in
# tfds's url_checksums): `data.archive` is handed to tfds as that file.
CIFAR_ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz",
                  "cifar100": "cifar-100-binary.tar.gz"}
CIFAR_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/"

TFDS_READ_BATCH = 10_000  # examples per tf.data batch when reading a tfds split

DIGITS_NUM_TRAIN = 1437  # of scikit-learn's 1797 digits; the last 360 are 'test'

SYNTHETIC_DEFAULTS = {"image_size": 8, "channels": 3, "num_classes": 10,
                      "train_size": 256, "test_size": 64, "seed": 0}
SYNTHETIC_NOISE_STD = 48.0  # pixel noise around each class template, uint8 scale


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """A labelled image dataset with a train and a test split, on the host."""
  name: str
  train_images: np.ndarray  # uint8 [N, H, W, C]
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray   # uint8 [M, H, W, C]
  test_labels: np.ndarray   # int32 [M]
  num_classes: int
  mean: tuple[float, ...]   # per channel, in [0, 1] pixel scale
  std: tuple[float, ...]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(int(d) for d in self.train_images.shape[1:])


@flax.struct.dataclass
class DeviceSplit:
  """One split's arrays on device (a pytree, so it can be passed into jit)."""
  images: jax.Array  # uint8 [N, H, W, C]
  labels: jax.Array  # int32 [N]

  @property
  def num_examples(self) -> int:
    return int(self.labels.shape[0])


# A split of a search or a training run: on device, or on disk.
Split = DeviceSplit | imagenet.RecordSplit


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _check_name(name) -> str:
  if name not in DATASET_NAMES:
    raise UserError(f"unknown data.name={name!r}; known datasets: "
                    f"{', '.join(DATASET_NAMES)}")
  return name


def archive_path(name: str, archive) -> str | None:
  """`data.archive` as an absolute path to an existing file, or None
  (config_check calls it before a run; `load_dataset` for its own callers)."""
  if archive is None:
    return None
  if name not in CIFAR_ARCHIVES:
    raise UserError(f"data.archive is for {' and '.join(CIFAR_ARCHIVES)} only "
                    f"(data.name={name}); unset it")
  path = os.path.abspath(os.path.expanduser(str(archive)))
  if not os.path.isfile(path):
    raise UserError(f"config.data.archive={archive} is not a file; pass the path of "
                    f"{CIFAR_ARCHIVES[name]} (from {CIFAR_ARCHIVE_URL})")
  return path


def _optional_size(data_config, field: str) -> int | None:
  """`data_config.<field>` as a positive int, or None when unset."""
  value = data_config.get(field, None)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise UserError(f"data.{field}={value!r} must be a positive integer or None")
  return int(value)


def _synthetic_settings(data_config) -> dict:
  """The synthetic set's sizes and seed from the config, with defaults."""
  settings = {}
  for field, default in SYNTHETIC_DEFAULTS.items():
    value = data_config.get(field, None)
    settings[field] = default if value is None else value
  minimum = {"image_size": 1, "channels": 1, "num_classes": 2,
             "train_size": 1, "test_size": 1, "seed": 0}
  for field, value in settings.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
        or value < minimum[field]:
      raise UserError(f"data.{field}={value!r} must be an integer >= {minimum[field]} "
                      "for the synthetic dataset")
    settings[field] = int(value)
  return settings


def dataset_spec(data_config) -> tuple[tuple[int, int, int], int]:
  """`(image_shape, num_classes)` of the configured dataset, without loading it."""
  name = _check_name(data_config.name)
  if name in CIFAR_NUM_CLASSES:
    return (32, 32, 3), CIFAR_NUM_CLASSES[name]
  if name == "digits":
    return (8, 8, 1), 10
  if imagenet.is_streamed(name):
    size = imagenet.image_size(data_config)
    return (size, size, 3), imagenet.DATASETS[name].num_classes
  s = _synthetic_settings(data_config)
  return (s["image_size"], s["image_size"], s["channels"]), s["num_classes"]


def load_dataset(data_config) -> ImageDataset:
  """Loads the dataset `data_config.name` as host numpy arrays.

  Args:
    data_config: `ConfigDict` with `name` (one of `DATASET_NAMES`) and the
      optional fields `data_dir` (tfds directory, None for the tfds default),
      `download` (default True), `archive` (CIFAR only: the path of the
      dataset's archive file, e.g. cifar-10-binary.tar.gz, to prepare it
      from instead of downloading it; None downloads), `train_size` /
      `test_size` (keep only the first that many examples of each split;
      None keeps all) and, for `synthetic`, `image_size`, `channels`,
      `num_classes`, `seed`.

  Raises:
    UserError: unknown name, bad sizes, an archive that is not a file or not
      the dataset's, or a tfds dataset that is neither prepared nor
      downloadable (one line, saying how to prepare it).
  """
  name = _check_name(data_config.name)
  if imagenet.is_streamed(name):
    raise UserError(f"data.name={name} is read from disk per batch: open it with "
                    "radars_jax.imagenet.open_dataset")
  train_size = _optional_size(data_config, "train_size")
  test_size = _optional_size(data_config, "test_size")
  archive = archive_path(name, data_config.get("archive", None))
  if name in CIFAR_NUM_CLASSES:
    dataset = _load_tfds_cifar(name, data_config.get("data_dir", None),
                               bool(data_config.get("download", True)),
                               archive, train_size, test_size)
  elif name == "digits":
    dataset = _load_digits()
  else:
    dataset = _make_synthetic(_synthetic_settings(data_config))
  return _truncate(dataset, train_size, test_size)


def _truncate(dataset: ImageDataset, train_size: int | None,
              test_size: int | None) -> ImageDataset:
  """Keeps the first `train_size` / `test_size` examples (None keeps all)."""
  return dataclasses.replace(
      dataset,
      train_images=dataset.train_images[:train_size],
      train_labels=dataset.train_labels[:train_size],
      test_images=dataset.test_images[:test_size],
      test_labels=dataset.test_labels[:test_size])


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of uint8 images [N, H, W, C], in [0, 1] scale."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return (tuple(float(m) for m in pixels.mean(0)),
          tuple(float(s) for s in pixels.std(0)))


def _tfds_missing_message(name: str, data_dir: str | None, reason: str) -> str:
  """One line: which dataset, where it was looked for, how to provide it.

  It points to the archive rather than to `tfds build`: tfds 4.9's command
  line imports apache_beam, which tfds's requirements and ours leave out.
  """
  if data_dir is None:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    where = (f"data_dir={tfds.core.constants.DATA_DIR} (the tfds default; "
             "data.data_dir is unset)")
  else:
    where = f"data_dir={data_dir}"
  reason = " ".join(reason.split())  # one line
  if len(reason) > 300:
    reason = reason[:297] + "..."
  archive = CIFAR_ARCHIVES[name]
  return (f"dataset {name} is not available in {where}: {reason}. Get "
          f"{CIFAR_ARCHIVE_URL}{archive} on any machine with internet and pass "
          f"--config.data.archive=PATH/{archive} (tfds prepares {name} from it, "
          f"offline), or pass --config.data.data_dir=DIR of a directory where "
          f"tfds has prepared {name}")


def _archive_download_config(tfds, name: str, archive: str, scratch_dir: str):
  """A tfds `DownloadConfig` that prepares `name` from the file `archive`.

  Before downloading a URL, tfds's download manager looks in `manual_dir`
  for a file with the URL's registered name and, if there is one, uses it
  in place of the download, after checking its registered size and sha256.
  A link under that name in `scratch_dir` lets the archive have any name;
  the archive is extracted there too, so nothing but the prepared dataset
  stays once `scratch_dir` is deleted.
  """
  manual_dir = os.path.join(scratch_dir, "manual")
  os.makedirs(manual_dir)
  os.symlink(archive, os.path.join(manual_dir, CIFAR_ARCHIVES[name]))
  return tfds.download.DownloadConfig(
      manual_dir=manual_dir, extract_dir=os.path.join(scratch_dir, "extracted"))


def _load_tfds_cifar(name: str, data_dir: str | None, download: bool,
                     archive: str | None, train_size: int | None,
                     test_size: int | None) -> ImageDataset:
  """CIFAR-10/100 through tensorflow-datasets (imported here: it is slow to import).

  Where the dataset is not prepared in `data_dir`, tfds prepares it from the
  file `archive` if given (no network, whatever `download` says), else from
  a download if `download`.

  `train_size` / `test_size` are passed on as split slices (`train[:n]`), so a
  quick run reads only what it uses. Splits are read in batches of
  `TFDS_READ_BATCH` and concatenated rather than with `batch_size=-1`: that
  batches by the split sizes in the dataset's metadata, and where there are
  none (`tfds.testing.mock_data` without metadata files, as in the pip
  package) TF 2.21 aborts the process on `batch(sys.maxsize)`.
  Offline, tfds raises:
  - `AssertionError` ("could not find data in ...") when the dataset is not
    prepared and `download=False`;
  - `requests.exceptions.ConnectionError` (an `OSError`) after about 3
    minutes of retries when it tries to download;
    `tfds.download.DownloadError` on bad HTTP answers; `ImportError` where a
    module that tfds's preparation imports is missing;
  - `NonMatchingChecksumError` when `archive` is not the registered file.
  All become one-line `UserError`s.
  """
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError(f"data.name={name} needs tensorflow and tensorflow-datasets "
                    f"({e}); pip install tensorflow-cpu tensorflow-datasets") from e
  try:  # TF only reads files here: keep it off the GPUs that JAX uses.
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF's devices were already initialised elsewhere
    pass

  train_split = "train" if train_size is None else f"train[:{train_size}]"
  test_split = "test" if test_size is None else f"test[:{test_size}]"
  processes = jax.process_count()
  if processes > 1:   # (each process reads its part; `gather_from_processes` joins them)
    train_split, test_split = (tfds.even_splits(split, n=processes)[jax.process_index()]
                               for split in (train_split, test_split))
  tfds_errors = (AssertionError, OSError, ImportError,
                 tfds.download.DownloadError, tf.errors.OpError)
  try:
    with contextlib.ExitStack() as stack:
      prepare_kwargs = {}
      if archive is not None:
        scratch_dir = stack.enter_context(tempfile.TemporaryDirectory())
        prepare_kwargs["download_config"] = _archive_download_config(
            tfds, name, archive, scratch_dir)
      splits = tfds.load(name, split=[train_split, test_split], data_dir=data_dir,
                         download=download or archive is not None,
                         download_and_prepare_kwargs=prepare_kwargs,
                         batch_size=TFDS_READ_BATCH, as_supervised=True)
      (train_images, train_labels), (test_images, test_labels) = (
          _concatenate_batches(tfds.as_numpy(split)) for split in splits)
  except tfds.download.download_manager.NonMatchingChecksumError as e:
    raise UserError(f"data.archive={archive} is not the {CIFAR_ARCHIVES[name]} "
                    f"that tfds prepares {name} from (its size or sha256 differ "
                    f"from tfds's registered ones); pass that file, from "
                    f"{CIFAR_ARCHIVE_URL}") from e
  except tfds_errors as e:
    if archive is not None:
      reason = (f"could not prepare it from data.archive={archive} "
                f"({type(e).__name__}: {e})")
    elif isinstance(e, AssertionError) and not download:
      reason = "it is not prepared there and data.download=False"
    elif isinstance(e, AssertionError):
      reason = f"{type(e).__name__}: {e}"
    else:
      reason = f"could not download it ({type(e).__name__}: {e})"
    raise UserError(_tfds_missing_message(name, data_dir, reason)) from e

  if processes > 1:
    train_images, train_labels, test_images, test_labels = (
        gather_from_processes(a) for a in (train_images, train_labels, test_images, test_labels))
  mean, std = CIFAR_STATS[name]
  return ImageDataset(
      name=name,
      train_images=np.asarray(train_images, np.uint8),
      train_labels=np.asarray(train_labels, np.int32),
      test_images=np.asarray(test_images, np.uint8),
      test_labels=np.asarray(test_labels, np.int32),
      num_classes=CIFAR_NUM_CLASSES[name], mean=mean, std=std)


def gather_from_processes(rows: np.ndarray) -> np.ndarray:
  """Every process's `rows`, concatenated in process order, on every
  process of a run of several (`radars_jax.distributed`): each reads its
  part of a dataset once, and the search holds all of it on every device.
  Parts may differ in length by some rows (padded for the exchange)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  lengths = np.asarray(multihost_utils.process_allgather(np.asarray(len(rows), np.int64)))
  padded = np.zeros((int(lengths.max()), *rows.shape[1:]), rows.dtype)
  padded[:len(rows)] = rows
  parts = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([part[:n] for part, n in zip(parts, lengths)])


def _concatenate_batches(batches) -> tuple[np.ndarray, np.ndarray]:
  """`(images, labels)` of a split from its numpy `(images, labels)` batches."""
  images, labels = [], []
  for batch_images, batch_labels in batches:
    images.append(np.asarray(batch_images, np.uint8))
    labels.append(np.asarray(batch_labels, np.int32))
  if not images:
    raise UserError("the tfds split has no examples")
  return np.concatenate(images), np.concatenate(labels)


def _load_digits() -> ImageDataset:
  """scikit-learn's 1797 8x8 handwritten digits (values 0..16) as uint8
  [N, 8, 8, 1] in 0..255; a fixed shuffle (RandomState(0)), then the first
  1437 are 'train' and the last 360 'test'. mean/std from the train split."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.RandomState(0).permutation(len(labels))
  train, test = order[:DIGITS_NUM_TRAIN], order[DIGITS_NUM_TRAIN:]
  mean, std = channel_stats(images[train])
  return ImageDataset("digits", images[train], labels[train], images[test],
                      labels[test], num_classes=10, mean=mean, std=std)


def _make_synthetic(settings: dict) -> ImageDataset:
  """Class-dependent images: each class has a fixed random template, an image
  is its class's template plus Gaussian pixel noise, clipped to uint8.
  Balanced labels in a shuffled order. Everything follows from `seed`; the
  templates, the train split and the test split use independent streams, so
  changing one split's size does not change the other split."""
  size, channels = settings["image_size"], settings["channels"]
  num_classes = settings["num_classes"]
  template_seed, train_seed, test_seed = np.random.SeedSequence(settings["seed"]).spawn(3)
  templates = np.random.default_rng(template_seed).uniform(
      0.0, 255.0, size=(num_classes, size, size, channels))

  def sample(seed_sequence, n):
    rng = np.random.default_rng(seed_sequence)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    noise = rng.normal(0.0, SYNTHETIC_NOISE_STD, size=(n, size, size, channels))
    images = np.clip(np.round(templates[labels] + noise), 0, 255).astype(np.uint8)
    return images, labels

  train_images, train_labels = sample(train_seed, settings["train_size"])
  test_images, test_labels = sample(test_seed, settings["test_size"])
  mean, std = channel_stats(train_images)
  return ImageDataset("synthetic", train_images, train_labels, test_images,
                      test_labels, num_classes=num_classes, mean=mean, std=std)


# ---------------------------------------------------------------------------
# Index bookkeeping (host)
# ---------------------------------------------------------------------------

def split_in_halves(num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint index sets covering `range(num_examples)`: a fixed
  permutation with `seed`, first half / second half (the second gets the
  extra example when `num_examples` is odd). DARTS trains the weights on one
  half of the training split and the alphas on the other."""
  order = np.random.RandomState(seed).permutation(num_examples)
  half = num_examples // 2
  return order[:half], order[half:]


def eval_batches(num_examples: int, batch_size: int) -> list[tuple[int, int]]:
  """`(start, stop)` ranges covering every example once, in order; the last
  may be smaller than `batch_size`."""
  if batch_size < 1:
    raise UserError(f"evaluation batch size {batch_size} must be positive")
  return [(start, min(start + batch_size, num_examples))
          for start in range(0, num_examples, batch_size)]


def to_device(images, labels, sharding=None) -> DeviceSplit:
  """Puts a split's arrays on device, as uint8 images and int32 labels;
  with `sharding` (e.g. replicated over the mesh) they are placed with it."""
  images = np.asarray(images, np.uint8)
  labels = np.asarray(labels, np.int32)
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  if sharding is None:
    return DeviceSplit(jax.device_put(images), jax.device_put(labels))
  return DeviceSplit(jax.device_put(images, sharding), jax.device_put(labels, sharding))


# ---------------------------------------------------------------------------
# Device-side helpers (pure, jittable)
# ---------------------------------------------------------------------------

def batch_indices(key: jax.Array, step, num_examples: int, batch_size: int) -> jax.Array:
  """The `batch_size` example indices of global step `step` (may be traced).

  Epochs have `num_examples // batch_size` steps (the remainder is dropped);
  epoch `e` visits `jax.random.permutation(fold_in(key, e), num_examples)` in
  order. A function of (key, step) only, so resumed runs see the same batches.
  `num_examples` and `batch_size` must be static Python ints.
  """
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch < 1:
    raise UserError(f"batch size {batch_size} is larger than the {num_examples} "
                    "examples it draws from")
  step = jnp.asarray(step, jnp.int32)
  epoch = step // steps_per_epoch
  position = step % steps_per_epoch
  order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)


def normalise(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32 in [0, 1] -> per channel `(x - mean) / std`."""
  x = jnp.asarray(images).astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop_and_flip(key: jax.Array, images: jax.Array, pad: int = 4,
                         flip: bool = True) -> jax.Array:
  """DARTS augmentation of a float batch [B, H, W, C]: zero-pad by `pad`
  pixels on each side, crop back to H x W at a random offset per example,
  and mirror each example horizontally with probability 1/2 when `flip`.
  `pad` and `flip` are static; `pad=0, flip=False` is the identity.
  (Called after `normalise`, the padding is the dataset's mean colour.)"""
  crop_key, flip_key = jax.random.split(key)
  batch, height, width, channels = images.shape
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)

    def crop(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                   (height, width, channels))

    images = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(flip_key, 0.5, (batch,))
    images = jnp.where(mirror[:, None, None, None], images[:, :, ::-1, :], images)
  return images


def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """DeVries & Taylor cutout on a batch [B, H, W, C]: per image, zeroes the
  `size` x `size` square centred at a uniformly random pixel, clipped at the
  borders (so at most size*size pixels). `size` is static; 0 is the identity."""
  if size <= 0:
    return images
  batch, height, width, _ = images.shape
  y_key, x_key = jax.random.split(key)
  centre_y = jax.random.randint(y_key, (batch, 1), 0, height)
  centre_x = jax.random.randint(x_key, (batch, 1), 0, width)
  top, left = centre_y - size // 2, centre_x - size // 2
  rows, cols = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
  in_rows = (rows >= top) & (rows < top + size)    # [B, H]
  in_cols = (cols >= left) & (cols < left + size)  # [B, W]
  hole = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
  return jnp.where(hole[..., None], jnp.zeros((), images.dtype), images)
