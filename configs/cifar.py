"""The paper's setting: RADARS on the large DARTS space, CIFAR-10, 12 GB.

    python -m radars_jax.main --config configs/cifar.py --workdir runs/cifar
    # see what the full space would need first (nothing is trained):
    python -m radars_jax.main --config configs/cifar.py --config.mode=describe

Space `darts_large`: the DARTS cell with all 23 registry ops on each of its
28 edges (`radars_jax/nas/ops.py`). Whole-space DARTS does not fit 12 GB per
step at these settings, and its program is far over `dnas.max_program_ops`
(`--config.method=darts --config.supernet.scan_edges=False` is refused
with its size; with `--config.method=darts` alone each cell's edges are
scanned and recomputed in the backward pass, and it fits;
docs/performance.md), so RADARS searches subspaces of k ops per edge, k
sized to the budget, and prunes until the alive space fits. Here the
shared program (every op on every edge) is over `dnas.max_program_ops`
too, so each sample compiles its own program (docs/performance.md: the
size of each). Search hyperparameters are DARTS's: batch 64, 16 channels,
8 cells, SGD 0.025 cosine to 0.001 (momentum 0.9, weight decay 3e-4, clip
5), alphas Adam 3e-4 (0.5, 0.999), weight decay 1e-3, the training split
halved for weights and alphas (first order DARTS inside each subspace), the
last 5,000 training images kept out for scoring architectures. CIFAR-10
comes from tensorflow-datasets (`--config.data.data_dir`; offline,
`--config.data.archive=PATH/cifar-10-binary.tar.gz`). The budget is the
bytes of one train step on one device.
Retrain the result with `configs/cifar_train.py --config.genotype=WORKDIR/genotype.json`.
"""
from radars_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.method = "radars"
  config.memory_budget_gb = 12.0
  config.data.name = "cifar10"
  config.data.batch_size = 64
  config.data.holdout_size = 5000
  config.space.name = "darts_large"
  config.supernet.channels = 16
  config.supernet.layers = 8
  # xla: one grouped convolution per depthwise op (`shifted` would unroll the
  # kernel's taps: 4x the program, over dnas.max_program_ops on this space)
  config.supernet.depthwise_impl = "xla"
  config.dnas.inner_mode = "first_order"      # DARTS inside every subspace
  config.dnas.epochs = 50                      # the final search over the pruned space
  config.dnas.derived_finetune_steps = 0
  config.radars.subspace_epochs = 5.0
  config.radars.max_iterations = 20
  config.radars.checkpoint_every_steps = 500
  config.controller.samples_per_iteration = 8
  config.controller.prune_threshold = 0.02    # uniform over 23 ops is 0.043
  config.log_every = 50
  return config
