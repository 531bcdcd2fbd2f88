"""Offline final training: retrain DARTS_V2 on scikit-learn's 8x8 digits.

    python -m radars_jax.main --config configs/digits_train.py --workdir runs/digits_train
    # a genotype found by `configs/digits.py`:
    python -m radars_jax.main --config configs/digits_train.py --workdir runs/dt2 \\
        --config.genotype=runs/digits/genotype.json

The DARTS evaluation protocol shrunk to the 1,437 training digits: 3 cells
of 8 channels, no auxiliary head (the maps at 2/3 depth are 2x2), no cutout,
a one-pixel shift and no flip, a short cosine schedule. Expect about 97%
test accuracy on the 360 test digits within a minute or two on a 2-core CPU;
eval.json in the workdir has the numbers.
"""
from radars_jax import config_defaults
from radars_jax.retrain import train


def get_config():
  config = config_defaults.base_config()
  train.add_train_config(config)
  config.mode = "train"
  config.genotype = "DARTS_V2"
  config.data.name = "digits"
  config.data.crop_padding = 1   # 8x8 images: shift by at most one pixel
  config.data.flip = False       # mirrored digits are other digits
  config.data.eval_batch_size = 360
  t = config.train
  t.layers = 3
  t.channels = 8
  t.mobile_width_mult = 0.25    # mobile genotypes (configs/digits_mobile.py) at its width
  t.batch_size = 64
  t.epochs = 15
  t.lr = 0.05
  t.cutout = 0
  t.drop_path = 0.0
  t.auxiliary_weight = 0.0
  t.log_every = 11
  t.eval_every = 5
  t.checkpoint_every_steps = 100
  return config
