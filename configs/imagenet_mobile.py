"""RADARS on the mobile space at ImageNet's size, with a 12 GB budget and a
latency target (the paper's ImageNet setting; FNAS's and MNAS's space).

    python -m radars_jax.main --config configs/imagenet_mobile.py --workdir runs/imagenet \\
        --config.data.manual_dir=DIR
    # the space, the bytes whole-space DNAS would need, the FLOPs range:
    python -m radars_jax.main --config configs/imagenet_mobile.py --config.mode=describe

DIR holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from
image-net.org); tfds prepares imagenet2012 from them once, in ArrayRecord
format, in `data.data_dir` (radars_jax/imagenet.py), and every batch is
then read from disk, cropped and flipped on the host, the next one while
the current one trains. `--config.data.name=imagenette` (10 classes,
downloaded by tfds) or `imagenet_resized/64x64` run the same search on
smaller data.

The space: ProxylessNAS's chain of 21 MBConv blocks (kernel 3/5/7,
expansion 3/6, or skipped), widths x1.0, 224x224 images, batch 64. One
step of whole-space Single-DARTS needs about 32 GB (docs/performance.md),
so RADARS searches subspaces that fit 12 GB and prunes until the alive
space fits. The reward is TuNAS's absolute form, accuracy - 0.07 *
|latency / target - 1|, with the latency of the derived network's forward
pass timed on this run's device: `hardware.target` is in seconds on that
device (5 ms here, for one image; set it for yours). Retrain the result
with `configs/imagenet_train.py --config.genotype=WORKDIR/genotype.json`.
"""
from radars_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.method = "radars"
  config.memory_budget_gb = 12.0
  config.data.name = "imagenet2012"
  config.data.image_size = 224
  config.data.batch_size = 64
  config.data.eval_batch_size = 250
  config.data.holdout_size = 10_000     # training images kept out of search steps
  config.data.crop_padding = 0           # (random resized crop on the host)
  config.space.name = "mobile"
  config.space.blocks = "4,4,4,4,4,1"
  config.supernet.width_mult = 1.0
  config.hardware.metric = "latency"
  config.hardware.target = 0.005
  config.hardware.form = "tunas"
  config.hardware.weight = -0.07
  config.dnas.inner_mode = "single_level"
  config.radars.final_epochs = 0.5        # the final search over the pruned space
  config.radars.subspace_epochs = 0.02    # about 400 steps of 64 images per sample
  config.radars.max_iterations = 10
  config.radars.checkpoint_every_steps = 200
  config.controller.samples_per_iteration = 8
  config.controller.prune_threshold = 0.07   # uniform over 7 ops is 0.14
  config.log_every = 50
  return config
