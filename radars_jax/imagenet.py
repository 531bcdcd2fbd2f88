"""ImageNet-family datasets, read from disk batch by batch.

ImageNet does not fit in a device's memory the way CIFAR and digits do
(`radars_jax.data` holds those on device and gathers every batch inside
jit). These datasets stay on disk as tfds ArrayRecord files, which can be
read at any index, and each batch is read, decoded and augmented on the
host:

- `open_dataset(data_config) -> RecordDataset`: the train and evaluation
  splits of `imagenet2012` (prepared from the archives in
  `data.manual_dir`), `imagenet_resized/32x32`, `imagenet_resized/64x64`
  or `imagenette` (downloaded by tfds), as `RecordSplit`s: a record source
  and the indices of the split's examples in it.
- `RecordSplit.batch_fn(...)`: `(key, step) -> batch`, the same contract as
  `dnas.steps.make_batch_fn` on a device split: the step's indices are
  `data.batch_indices(key, step)`, and every random draw of the host's
  augmentation is seeded by (key, step), so a resumed run reads the same
  batches as an uninterrupted one. Each process reads only the rows of the
  batch its own devices hold (`jax.make_array_from_callback`), and the next
  step's batch is read in a background thread while the current one trains
  (prefetched to the device).
- `RecordSplit.eval_batches(...)`: the split in order, with the evaluation
  transform, for `dnas.steps.Evaluator`.

Augmentation (`train_transform`, `eval_transform`): the full-size datasets
take the standard ImageNet training augmentation (Inception's random
resized crop, scale 0.08-1 and aspect ratio 3/4-4/3, then a horizontal flip)
and evaluation (resize the short side to size / 0.875, centre crop). The
downsampled `imagenet_resized` images are already at their size: they take
the CIFAR augmentation on device (`data.crop_padding`, `data.flip`), as in
Chrabaszcz et al. 2017.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from radars_jax.errors import UserError

# Channel statistics of ImageNet's training split, in [0, 1] pixel scale.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EVAL_CROP_FRACTION = 0.875     # the centre crop's share of the resized short side
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What is known of a dataset before it is opened."""
  tfds_name: str
  num_classes: int
  image_size: int      # the default `data.image_size` (the stored size for resized sets)
  train_examples: int
  eval_split: str      # the split a retrained network is tested on
  full_size: bool      # images of any size: random resized crop / centre crop on the host
  manual: bool         # tfds prepares it from archives the user downloads


DATASETS = {
    "imagenet2012": DatasetInfo("imagenet2012", 1000, 224, 1_281_167, "validation",
                                full_size=True, manual=True),
    "imagenet_resized/32x32": DatasetInfo("imagenet_resized/32x32", 1000, 32, 1_281_167,
                                          "validation", full_size=False, manual=False),
    "imagenet_resized/64x64": DatasetInfo("imagenet_resized/64x64", 1000, 64, 1_281_167,
                                          "validation", full_size=False, manual=False),
    "imagenette": DatasetInfo("imagenette", 10, 224, 9_469, "validation",
                              full_size=True, manual=False),
}
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def image_size(data_config) -> int:
  """The side of the images a run trains on: `data.image_size` for the
  full-size datasets (None: 224), the stored side for `imagenet_resized`."""
  info = DATASETS[data_config.name]
  if not info.full_size:
    return info.image_size
  value = data_config.get("image_size", None)
  return info.image_size if value is None else int(value)


# ---------------------------------------------------------------------------
# Transforms (host, numpy and PIL)
# ---------------------------------------------------------------------------

def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of uint8 [H, W, 3] (PIL)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale=RESIZED_CROP_SCALE, ratio=RESIZED_CROP_RATIO,
                            attempts: int = 10) -> tuple[int, int, int, int]:
  """Inception's crop `(top, left, h, w)`: an area of `scale` of the image at
  an aspect ratio log-uniform in `ratio`; after `attempts` misses, the
  largest centred crop within `ratio`."""
  area = height * width
  log_ratio = np.log(ratio)
  for _ in range(attempts):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(*log_ratio))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif aspect > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def train_transform(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
  """Random resized crop to `size` x `size`, then a horizontal flip with
  probability 1/2 (uint8 in, uint8 out)."""
  top, left, h, w = random_resized_crop_box(rng, *image.shape[:2])
  out = _resize(image[top:top + h, left:left + w], size, size)
  return out[:, ::-1] if rng.random() < 0.5 else out


def eval_transform(image: np.ndarray, size: int,
                   crop_fraction: float = EVAL_CROP_FRACTION) -> np.ndarray:
  """Resize the short side to `size / crop_fraction`, crop the centre
  `size` x `size`."""
  height, width = image.shape[:2]
  short = size / crop_fraction
  h = max(size, int(round(height * short / min(height, width))))
  w = max(size, int(round(width * short / min(height, width))))
  image = _resize(image, h, w)
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] (a grey image's one channel repeated)."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class RecordSplit:
  """One split on disk: `source[indices[i]]` is its example `i` (a dict with
  `image` uint8 [H, W, C] and `label`). `full_size`: the host crops and
  resizes to `image_size` (else images are used as stored, and augmented
  on device). Not a pytree: it never enters jit."""
  source: Any
  indices: np.ndarray
  image_size: int
  full_size: bool
  threads: int

  @property
  def num_examples(self) -> int:
    return len(self.indices)

  def subset(self, rows: np.ndarray) -> "RecordSplit":
    return dataclasses.replace(self, indices=self.indices[np.asarray(rows)])

  def read(self, rows, seed=None, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [len(rows), S, S, 3] and int32 labels of the split's
    `rows`: the training transform seeded by `seed` (a list of ints) and
    the row, so a row's crop does not depend on which process reads it; the
    evaluation transform when `seed` is None."""
    rows = [int(r) for r in rows]
    size = self.image_size

    def one(row):
      record = self.source[int(self.indices[row])]
      image = _as_rgb(record["image"])
      if self.full_size:
        if seed is None:
          image = eval_transform(image, size)
        else:
          image = train_transform(image, np.random.default_rng([*seed, row]), size)
      elif image.shape[:2] != (size, size):
        image = _resize(image, size, size)
      return image, int(record["label"])

    mapped = pool.map(one, rows) if pool is not None else map(one, rows)
    images, labels = zip(*mapped) if rows else ((), ())
    return (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
            np.asarray(labels, np.int32))

  def batch_fn(self, batch_size: int, mean, std, *, pad: int, flip: bool, sharding,
               stacked: bool = False) -> Callable:
    return _RecordBatches(self, batch_size, mean, std, pad, flip, sharding, stacked)

  def eval_batches(self, batch_size: int, sharding):
    """`(start, images, labels)` of fixed-size batches in order (the last
    overlaps the one before), global uint8 arrays with `sharding` (each
    process reads the rows its devices hold), each read while the one
    before is scored."""
    n = self.num_examples
    starts = [min(start, n - batch_size) for start in range(0, n, batch_size)]
    with concurrent.futures.ThreadPoolExecutor(self.threads) as pool, \
        concurrent.futures.ThreadPoolExecutor(1) as ahead:
      read = lambda start: read_global(self, np.arange(start, start + batch_size)[None],
                                       [None], sharding, pool, stacked=False)
      pending = ahead.submit(read, starts[0]) if starts else None
      for i, start in enumerate(starts):
        images, labels = pending.result()
        if i + 1 < len(starts):
          pending = ahead.submit(read, starts[i + 1])
        yield start, images, labels


def read_global(split: RecordSplit, rows: np.ndarray, seeds: list, sharding, pool,
                stacked: bool) -> tuple[jax.Array, jax.Array]:
  """Global uint8 images and int32 labels of the split's `rows`
  ([samples, batch]; `stacked=False`: one sample, and the arrays drop that
  axis), sample `s` transformed with `seeds[s]` (None: for evaluation).
  This process reads only the rows its devices hold."""
  read: dict = {}

  def part(index):
    """`(images, labels)` of one device's slice."""
    samples, batch = (index[0], index[1]) if stacked else (slice(0, 1), index[0])
    samples = range(*samples.indices(rows.shape[0]))
    batch = range(*batch.indices(rows.shape[1]))
    if (samples, batch) not in read:
      parts = [split.read(rows[s][batch.start:batch.stop], seeds[s], pool) for s in samples]
      images, labels = (np.stack(a) for a in zip(*parts))
      read[(samples, batch)] = (images, labels) if stacked else (images[0], labels[0])
    return read[(samples, batch)]

  label_shape = rows.shape if stacked else rows.shape[1:]
  size = split.image_size
  images = jax.make_array_from_callback((*label_shape, size, size, 3), sharding,
                                        lambda index: part(index)[0])
  labels = jax.make_array_from_callback(label_shape, sharding, lambda index: part(index)[1])
  return images, labels


class _RecordBatches:
  """`(key, step) -> {"image", "label"}`: a `RecordSplit`'s batches, as
  `dnas.steps.make_batch_fn` makes them of a device split; `stacked`: `key`
  holds one key per sample and the batch one batch per sample. The next
  step's batch is read in a background thread."""

  def __init__(self, split: RecordSplit, batch_size: int, mean, std, pad: int, flip: bool,
               sharding, stacked: bool):
    # (imported here: `radars_jax.data` imports this module)
    from radars_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    self.split, self.sharding, self.stacked = split, sharding, stacked
    n = split.num_examples
    indices = lambda key, step: data_lib.batch_indices(key, step, n, batch_size)
    self._indices = jax.jit(jax.vmap(indices, in_axes=(0, None)) if stacked else indices)

    def finish(images, key, step):
      x = data_lib.normalise(images, mean, std)
      if split.full_size:   # (cropped and flipped on the host)
        return x
      augment = lambda k, x: data_lib.random_crop_and_flip(jax.random.fold_in(k, step), x,
                                                          pad, flip)
      return jax.vmap(augment)(key, x) if stacked else augment(key, x)

    self._finish = jax.jit(finish, out_shardings=sharding)
    self._pool = concurrent.futures.ThreadPoolExecutor(split.threads)
    self._ahead = concurrent.futures.ThreadPoolExecutor(1)
    self._pending: tuple | None = None   # ((key bytes, step), its batch's future)

  def _batch(self, key, key_data: np.ndarray, step: int) -> dict:
    """The batch's arrays, this process reading only the rows its devices
    hold; sample `s`'s host augmentation seeded by its key's data and `step`."""
    rows = np.asarray(jax.device_get(self._indices(key, step)))
    rows = rows if self.stacked else rows[None]
    seeds = [[int(x) for x in data] + [step] for data in key_data.reshape(len(rows), -1)]
    images, labels = read_global(self.split, rows, seeds, self.sharding, self._pool,
                                 self.stacked)
    return {"image": self._finish(images, key, step), "label": labels}

  def __call__(self, key, step) -> dict:
    step = int(step)
    key_data = np.asarray(jax.random.key_data(key))
    signature = key_data.tobytes()
    if self._pending is not None and self._pending[0] == (signature, step):
      batch = self._pending[1].result()
    else:
      batch = self._batch(key, key_data, step)
    # (only this caller's thread reads and sets `_pending`)
    self._pending = ((signature, step + 1),
                     self._ahead.submit(self._batch, key, key_data, step + 1))
    return batch


# ---------------------------------------------------------------------------
# Opening a dataset
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RecordDataset:
  """A dataset's training and evaluation splits on disk."""
  name: str
  train: RecordSplit
  test: RecordSplit
  num_classes: int
  mean: tuple[float, ...] = IMAGENET_STATS[0]
  std: tuple[float, ...] = IMAGENET_STATS[1]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.train.image_size, self.train.image_size, 3)


def manual_dir(data_config) -> str | None:
  """`data.manual_dir` (imagenet2012: the directory holding
  ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar), checked."""
  value = data_config.get("manual_dir", None)
  if value is None:
    return None
  if data_config.name != "imagenet2012":
    raise UserError(f"data.manual_dir is for imagenet2012 only (data.name="
                    f"{data_config.name}); unset it")
  path = os.path.abspath(os.path.expanduser(str(value)))
  if not os.path.isdir(path):
    raise UserError(f"config.data.manual_dir={value} is not a directory; pass the directory "
                    f"holding {' and '.join(IMAGENET_MANUAL_FILES)} (from image-net.org)")
  return path


def open_dataset(data_config) -> RecordDataset:
  """The dataset `data_config.name` (a key of `DATASETS`) as record splits.

  Where it is not prepared in `data.data_dir` (None: tfds's default), tfds
  prepares it in ArrayRecord format: `imagenet2012` from `data.manual_dir`,
  the others by downloading (`data.download`). `data.train_size` /
  `data.test_size` keep the first that many examples of each split.

  Raises:
    UserError: in one line, when it is neither prepared nor preparable, or
      prepared in tfds's default TFRecord format (which cannot be read by
      index).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  name = data_config.name
  info = DATASETS[name]
  data_dir = data_config.get("data_dir", None)
  manual = manual_dir(data_config)
  download = bool(data_config.get("download", True))
  prepare_kwargs = {}
  if manual is not None:
    prepare_kwargs["download_config"] = tfds.download.DownloadConfig(manual_dir=manual)
  open_sources = lambda prepare: tfds.data_source(
      info.tfds_name, split=["train", info.eval_split], data_dir=data_dir,
      download=prepare and (download or manual is not None),
      builder_kwargs={"file_format": "array_record"},
      download_and_prepare_kwargs=prepare_kwargs)
  first = jax.process_index() == 0
  try:
    # Of several processes, the first prepares the dataset (several at once
    # would write the same files) and the others open it once it is ready.
    try:
      if first:
        train, test = open_sources(True)
    finally:
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices("radars_jax: dataset prepared")
    if not first:
      train, test = open_sources(False)
  except (AssertionError, OSError, ImportError, ValueError, NotImplementedError,
          tfds.download.DownloadError) as e:
    if isinstance(e, NotImplementedError) or "File format is already set" in str(e):
      # prepared, but in a format without random access
      raise UserError(f"dataset {name} in {data_dir or 'the tfds default data_dir'} is "
                      "prepared in TFRecord format, which cannot be read by index; pass "
                      "another --config.data.data_dir=DIR, where radars_jax prepares it in "
                      "ArrayRecord format") from e
    raise UserError(_missing_message(name, data_dir, manual, e)) from e
  threads = int(data_config.get("reader_threads", None) or min(32, os.cpu_count() or 1))
  size = image_size(data_config)

  def split(source, limit):
    n = len(source) if limit is None else min(len(source), int(limit))
    return RecordSplit(source, np.arange(n), size, info.full_size, threads)

  return RecordDataset(name, split(train, data_config.get("train_size", None)),
                       split(test, data_config.get("test_size", None)), info.num_classes)


def _missing_message(name: str, data_dir, manual, error: Exception) -> str:
  reason = " ".join(f"{type(error).__name__}: {error}".split())
  if len(reason) > 300:
    reason = reason[:297] + "..."
  where = f"data_dir={data_dir}" if data_dir else "tfds's default data_dir"
  if DATASETS[name].manual and manual is None:
    how = (f"download {' and '.join(IMAGENET_MANUAL_FILES)} from image-net.org and pass "
           "--config.data.manual_dir=DIR of the directory holding them")
  elif DATASETS[name].manual:
    how = f"check that {manual} holds {' and '.join(IMAGENET_MANUAL_FILES)}"
  else:
    how = (f"prepare it on a machine with internet (python -c \"import tensorflow_datasets "
           f"as tfds; tfds.builder('{name}', file_format='array_record')"
           f".download_and_prepare()\") and pass --config.data.data_dir=DIR")
  return (f"dataset {name} could not be opened from {where} in ArrayRecord format "
          f"({reason}); {how}")


def is_streamed(name: str) -> bool:
  """Whether `data.name` is read from disk per batch (this module)."""
  return name in DATASETS
