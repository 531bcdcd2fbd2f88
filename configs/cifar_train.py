"""Final training of a genotype with the DARTS evaluation protocol on CIFAR-10.

    python -m radars_jax.main --config configs/cifar_train.py --workdir runs/darts_v2
    # a searched genotype, or another published one (DARTS_V1, PC_DARTS):
    python -m radars_jax.main --config configs/cifar_train.py --workdir runs/mine \\
        --config.genotype=runs/search/genotype.json
    # a NAS-Bench-201 cell, with its table entry printed and recorded:
    python -m radars_jax.main --config configs/cifar_train.py --workdir runs/nb201 \\
        --config.genotype='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' \\
        --config.table=/work/shared/data/nb201_cifar10.csv

CIFAR-10 comes from tensorflow-datasets (`data.data_dir`; prepare it with
`tfds build cifar10` where there is no internet). The protocol (DARTS,
Liu et al. 2019): 20 cells, 36 initial channels, batch 96, 600 epochs of SGD
(momentum 0.9, weight decay 3e-4, lr 0.025 cosine to 0, gradient norm
clipped at 5), cutout 16, drop path 0.2 ramped linearly, auxiliary head
weighted 0.4. Every number is a `config.train` field, e.g.
`--config.train.epochs=20` for a quick check.

What to expect for DARTS_V2: 3,349,342 weights (without the auxiliary
head), 528M multiply-adds per image, and about 97.2% test accuracy after 600
epochs (the paper reports 2.76 +- 0.09% error); DARTS_V1 3.17M weights,
97.0%; PC_DARTS 3.63M weights, 97.4%. The run checkpoints every
`checkpoint_every_steps` steps and resumes by itself when started again
with the same workdir; WORKDIR/eval.json holds the test accuracy, weights,
FLOPs, epochs and seconds.
"""
from radars_jax import config_defaults
from radars_jax.retrain import train


def get_config():
  config = config_defaults.base_config()
  train.add_train_config(config)     # no-op where base_config already has it
  config.mode = "train"
  config.genotype = "DARTS_V2"
  config.data.name = "cifar10"
  config.data.crop_padding = 4
  config.data.flip = True
  config.data.eval_batch_size = 500
  t = config.train
  t.layers = 20
  t.channels = 36
  t.batch_size = 96
  t.epochs = 600
  t.lr = 0.025
  t.lr_min = 0.0
  t.momentum = 0.9
  t.weight_decay = 3e-4
  t.grad_clip = 5.0
  t.cutout = 16
  t.drop_path = 0.2
  t.auxiliary_weight = 0.4
  t.log_every = 100
  t.eval_every = 10                  # epochs
  t.checkpoint_every_steps = 2000    # ~4 epochs of 520 steps
  return config
