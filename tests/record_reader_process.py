"""One of two processes reading ImageNet batches from disk as one run
(tests/test_imagenet.py): `python record_reader_process.py COORDINATOR
PROCESS_ID DATA_DIR MANUAL_DIR OUT`. Writes how many records this process read and
the whole batch, gathered from both."""
import json
import sys

import jax
import numpy as np


def main(coordinator: str, process_id: int, data_dir: str, manual_dir: str, out: str) -> None:
  jax.distributed.initialize(coordinator, num_processes=2, process_id=process_id)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from radars_jax import config_defaults, imagenet, parallel  # pylint: disable=import-outside-toplevel
  from test_imagenet import CountingSource  # pylint: disable=import-outside-toplevel
  config = config_defaults.base_config().data
  config.update(name="imagenet2012", data_dir=data_dir, manual_dir=manual_dir, image_size=16,
                reader_threads=1)
  train = imagenet.open_dataset(config).train
  counting = CountingSource(train.source)
  split = imagenet.RecordSplit(counting, train.indices, 16, True, 1)
  sharding = parallel.batch_sharded(parallel.make_mesh())
  batches = split.batch_fn(4, (0.5,) * 3, (0.25,) * 3, pad=0, flip=False, sharding=sharding)
  batch = batches(jax.random.key(0), 0)
  batches._pending[1].result()   # pylint: disable=protected-access
  gathered = {name: np.asarray(multihost_utils.process_allgather(value, tiled=True))
              for name, value in batch.items()}
  with open(out, "w", encoding="utf-8") as f:
    json.dump({"reads": counting.reads, "devices": jax.device_count(),
               "image": gathered["image"].tolist(), "label": gathered["label"].tolist()}, f)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:6])
