"""How fast this machine reads ImageNet batches from disk (radars_jax/imagenet.py).

    python experiments/imagenet_input.py --json experiments/results/imagenet_input_cpu.json

Writes ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar of random JPEGs
at ImageNet's typical size (500x375 by default) in a temporary directory,
lets tfds prepare imagenet2012 from them in ArrayRecord format (the real
preparation path, as `--config.data.manual_dir` does), then times:
- training batches (random resized crop to `--size`, flip, normalised on
  the device) through the batch function a search or a retraining uses,
  one step after another (each next batch read ahead in the background);
- evaluation batches (resize, centre crop) as the evaluator reads them.
Random pixels compress worse than photographs, so decoding here is slower
than on real ImageNet JPEGs of the same size.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

SYNSETS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
           "n01498041", "n01514668")   # labels 0..7 of tfds's imagenet2012


def _jpeg(seed: int, height: int, width: int) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def write_ilsvrc_archives(directory, classes: int, per_class: int, val: int,
                          height: int, width: int) -> None:
  """ILSVRC2012_img_train.tar (a tar of one tar of JPEGs per synset) and
  ILSVRC2012_img_val.tar (JPEGs named as ImageNet's), as image-net.org ships
  them, in `directory`. Image sizes vary by a pixel per image."""
  directory = Path(directory)
  with tarfile.open(directory / "ILSVRC2012_img_train.tar", "w") as outer:
    for c, synset in enumerate(SYNSETS[:classes]):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(per_class):
          _add(tar, f"{synset}_{i}.JPEG", _jpeg(1000 * c + i, height + i % 7, width))
      _add(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(directory / "ILSVRC2012_img_val.tar", "w") as tar:
    for i in range(1, val + 1):
      _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(-i % 2**31, width, height))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--classes", type=int, default=4)
  parser.add_argument("--per-class", type=int, default=128)
  parser.add_argument("--val", type=int, default=128)
  parser.add_argument("--height", type=int, default=375)
  parser.add_argument("--width", type=int, default=500)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--threads", type=int, default=None,
                      help="data.reader_threads (default: the library's, the CPU count)")
  parser.add_argument("--json", default=None)
  args = parser.parse_args()

  from radars_jax import config_defaults, imagenet, parallel  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as scratch:
    manual = Path(scratch) / "manual"
    manual.mkdir()
    start = time.perf_counter()
    write_ilsvrc_archives(manual, args.classes, args.per_class, args.val, args.height,
                          args.width)
    write_s = time.perf_counter() - start
    config = config_defaults.base_config().data
    config.update(name="imagenet2012", manual_dir=str(manual),
                  data_dir=str(Path(scratch) / "tfds"), image_size=args.size,
                  reader_threads=args.threads)
    start = time.perf_counter()
    ds = imagenet.open_dataset(config)
    prepare_s = time.perf_counter() - start
    mesh = parallel.make_mesh()
    batches = ds.train.batch_fn(args.batch, ds.mean, ds.std, pad=0, flip=False,
                                sharding=parallel.batch_sharded(mesh))
    key = jax.random.key(0)
    jax.block_until_ready(batches(key, 0))   # compiles the indices and normalisation
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
      jax.block_until_ready(batches(key, step))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluated = sum(len(labels) for _, _, labels in
                    ds.test.eval_batches(args.batch, parallel.batch_sharded(mesh)))
    eval_s = time.perf_counter() - start
  threads = ds.train.threads
  result = {
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}",
      "images": {"train": ds.train.num_examples, "val": ds.test.num_examples,
                 "jpeg": f"{args.width}x{args.height}"},
      "size": args.size, "batch": args.batch, "reader_threads": threads,
      "write_archives_s": round(write_s, 2),
      "tfds_prepare_s": round(prepare_s, 2),
      "train_images_per_s": round(args.steps * args.batch / train_s, 1),
      "eval_images_per_s": round(evaluated / eval_s, 1),
  }
  print(json.dumps(result, indent=2))
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
