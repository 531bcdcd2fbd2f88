"""The mobile (MNAS / ProxylessNAS) space on scikit-learn's digits, offline.

    python -m radars_jax.main --config configs/digits_mobile.py --workdir runs/digits_mobile
    # the space, its weights and its architectures' FLOPs range:
    python -m radars_jax.main --config configs/digits_mobile.py --config.mode=describe

A chain of MBConv blocks (`radars_jax.nas.mobile`), two per stage here (one
in the last): each block chooses its kernel (3/5/7) and expansion (3/6),
or is skipped, except a stage's first. Widths are a quarter of
MobileNetV2's. The budget lets RADARS train 2 ops per block in a step; the
controller prunes until the alive space fits. `--config.method=darts`,
`single_darts`, `rl` or `random` search the same space. Retrain the found
network with `configs/digits_train.py --config.genotype=WORKDIR/genotype.json`.
"""
from radars_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.method = "radars"
  config.memory_budget_gb = 0.3
  config.radars.budget_margin = 0.02
  config.data.name = "digits"
  config.data.holdout_size = 287      # 20% of the 1,437 training digits
  config.data.batch_size = 64
  config.data.crop_padding = 1        # 8x8 images: shift by at most one pixel
  config.data.flip = False            # mirrored digits are other digits
  config.space.name = "mobile"
  config.space.blocks = "2,2,2,2,2,1"
  config.supernet.width_mult = 0.25
  config.dnas.inner_mode = "single_level"
  config.dnas.epochs = 10             # the final search over the pruned space
  config.dnas.derived_finetune_steps = 50
  config.radars.subspace_epochs = 4.0
  config.radars.max_iterations = 4
  config.controller.samples_per_iteration = 4
  config.controller.lr = 0.05
  config.controller.prune_threshold = 0.07   # uniform over 7 ops is 0.14
  config.log_every = 5
  return config
