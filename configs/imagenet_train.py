"""Retrain a mobile network found at ImageNet's size (configs/imagenet_mobile.py)
from scratch, with the usual ImageNet recipe, and test it on the validation split.

    python -m radars_jax.main --config configs/imagenet_train.py --workdir runs/imagenet_train \\
        --config.data.manual_dir=DIR --config.genotype=runs/imagenet/genotype.json

The recipe of MobileNetV2 / ProxylessNAS: SGD with Nesterov-free momentum
0.9, learning rate 0.1 per 256 images on a cosine to 0, weight decay 4e-5,
label smoothing 0.1, 150 epochs, batch 256, the standard augmentation
(random resized crop and flip; evaluation: resize and centre crop, read
from disk per batch by radars_jax/imagenet.py), and the weights' moving
average (decay 0.9998) tested in place of the last weights. The default
genotype, MOBILENET_V2_LIKE, is the hand-designed reference in the same
space: MobileNetV2's depth per stage of MBConv 3x3 x6 blocks.
"""
from radars_jax import config_defaults
from radars_jax.retrain import train


def get_config():
  config = config_defaults.base_config()
  train.add_train_config(config)
  config.mode = "train"
  config.genotype = "MOBILENET_V2_LIKE"
  config.data.name = "imagenet2012"
  config.data.image_size = 224
  config.data.crop_padding = 0          # (random resized crop on the host)
  config.data.eval_batch_size = 250
  t = config.train
  t.mobile_width_mult = 1.0
  t.batch_size = 256
  t.epochs = 150
  t.lr = 0.1
  t.lr_min = 0.0
  t.momentum = 0.9
  t.weight_decay = 4e-5
  t.grad_clip = 5.0
  t.cutout = 0
  t.drop_path = 0.0
  t.auxiliary_weight = 0.0
  t.label_smoothing = 0.1
  t.ema_decay = 0.9998
  t.log_every = 100
  t.eval_every = 10
  t.checkpoint_every_steps = 2000
  return config
