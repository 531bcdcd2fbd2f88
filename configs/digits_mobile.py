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
import importlib.util
from pathlib import Path


def get_config():
  """configs/digits.py's search (data, DNAS, controller) on the mobile space."""
  spec = importlib.util.spec_from_file_location("digits", Path(__file__).with_name("digits.py"))
  digits = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(digits)
  config = digits.get_config()
  config.memory_budget_gb = 0.3
  config.space.name = "mobile"
  config.space.blocks = "2,2,2,2,2,1"
  config.supernet.width_mult = 0.25
  config.radars.subspace_epochs = 4.0
  config.radars.max_iterations = 4
  config.controller.prune_threshold = 0.07   # uniform over 7 ops is 0.14
  # (the alphas' rate this space was measured at, docs/performance.md;
  # configs/digits.py's 0.1 is unmeasured here)
  config.dnas.alpha_lr = 3e-4
  return config
