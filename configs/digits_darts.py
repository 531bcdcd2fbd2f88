"""Single-DARTS over the whole DARTS cell space on scikit-learn's digits.

    python -m radars_jax.main --config configs/digits_darts.py --workdir runs/digits_darts

1,797 real 8x8 handwritten digits ship with scikit-learn, so this runs
anywhere, without downloads, in a few minutes on a laptop CPU. The derived
architecture's holdout accuracy (with the supernet's weights) is printed
and written to WORKDIR/summary.json.
"""
from radars_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.method = "single_darts"
  config.data.name = "digits"
  config.data.holdout_size = 287      # 20% of the 1,437 training digits
  config.data.batch_size = 64
  config.data.crop_padding = 1        # 8x8 images: shift by at most one pixel
  config.data.flip = False            # mirrored digits are other digits
  config.space.name = "darts"
  config.supernet.channels = 8
  config.supernet.layers = 3
  # (the performance options are auto: on the CPU `shifted` depthwise
  # kernels, and each cell's 14 edges in one lax.scan, each mixed op
  # recomputed in the backward pass; radars_jax.performance)
  config.dnas.epochs = 20
  config.dnas.derived_finetune_steps = 200
  config.log_every = 5
  return config
