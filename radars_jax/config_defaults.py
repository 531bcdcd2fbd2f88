"""Every config field with its default; config files change a few.

A config file (`configs/*.py`) defines `get_config()`, starting from
`base_config()`. Every field can be overridden on the command line, e.g.
`--config.dnas.epochs=3 --config.space.name=nb201`.
"""
import ml_collections

from radars_jax import controller


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "search"          # search | describe | train
  config.method = "single_darts"  # darts | single_darts | radars | rl | random
  config.seed = 0
  config.memory_budget_gb = ml_collections.FieldReference(None, field_type=float)
  config.log_every = 10           # steps between host syncs (metrics, progress)
  config.progress_bar = True
  config.compilation_cache = True  # persistent XLA cache in WORKDIR/jax_cache

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"     # cifar10 | cifar100 | digits | synthetic
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.data.download = True
  # cifar10 / cifar100: the path of the archive tfds downloads
  # (cifar-10-binary.tar.gz / cifar-100-binary.tar.gz), to prepare the
  # dataset from it without the network; None downloads.
  config.data.archive = ml_collections.FieldReference(None, field_type=str)
  config.data.train_size = ml_collections.FieldReference(None, field_type=int)
  config.data.test_size = ml_collections.FieldReference(None, field_type=int)
  config.data.holdout_size = 5000  # training examples kept out of search steps, for scoring
  config.data.split_seed = 0
  config.data.batch_size = 64
  config.data.eval_batch_size = 500
  config.data.crop_padding = 4     # DARTS augmentation: pad-and-crop, flip
  config.data.flip = True
  # synthetic data only
  config.data.image_size = 8
  config.data.channels = 3
  config.data.num_classes = 10

  config.space = ml_collections.ConfigDict()
  config.space.name = "darts"      # darts | darts_large | nb201
  config.space.ops = ml_collections.FieldReference(None, field_type=str)  # "a,b,c"
  config.space.num_ops = ml_collections.FieldReference(None, field_type=int)

  config.supernet = ml_collections.ConfigDict()
  config.supernet.channels = 16
  config.supernet.layers = 8       # DARTS cells
  config.supernet.steps = 4        # nodes per DARTS cell (the darts spaces are built for 4)
  config.supernet.stem_multiplier = 3
  config.supernet.cells_per_stage = 5  # NAS-Bench-201 skeleton
  config.supernet.depthwise_impl = "xla"  # xla | shifted | scan | auto (radars_jax.depthwise)
  # Each op once over all the edges that use it (same numbers): DARTS
  # compiles faster but the step needs more memory (docs/performance.md).
  config.supernet.stack_edges = False
  # Each cell's edges in a lax.scan (same numbers; the full space only, a
  # subspace whose edges differ runs per edge): one compiled mixed op per
  # cell instead of one per edge, each op's weights stacked over the edges
  # (docs/performance.md).
  config.supernet.scan_edges = False
  # With scan_edges: recompute each scanned mixed op in the backward pass
  # (jax.checkpoint), keeping only its input: the full DARTS step needs
  # several times less memory (docs/performance.md). Switched supernets
  # always recompute.
  config.supernet.remat = False
  # RADARS's shared programs: the switched supernet runs each cell's edges
  # in a lax.scan whose gradient keeps only the cell's states (same numbers
  # to float rounding, same weight paths): fewer bytes, and on DARTS a much
  # faster compile (docs/performance.md).
  config.supernet.scan_switched = False

  config.dnas = ml_collections.ConfigDict()
  config.dnas.epochs = 50
  config.dnas.order = 1            # method=darts: 1 first order, 2 second order
  config.dnas.inner_mode = "single_level"  # DNAS mode inside RADARS subspaces
  config.dnas.weight_lr = 0.025
  config.dnas.weight_lr_min = 0.001
  config.dnas.momentum = 0.9
  config.dnas.weight_decay = 3e-4
  config.dnas.grad_clip = 5.0
  config.dnas.alpha_lr = 3e-4
  config.dnas.alpha_betas = (0.5, 0.999)
  config.dnas.alpha_weight_decay = 1e-3
  config.dnas.alpha_init_scale = 1e-3
  # First order: the alpha pass and the weight pass as two iterations of one
  # lax.scan, so the network's gradient compiles once instead of twice (each
  # step also computes a weight gradient it drops; docs/performance.md).
  config.dnas.passes_in_loop = False
  # The largest train step (StableHLO operations) compiled: XLA's compile
  # time and host memory grow faster than linearly with it, and the
  # largest programs crashed it (docs/performance.md). A larger one is
  # refused like a step over the memory budget (RADARS falls back to
  # smaller programs). None: no limit.
  config.dnas.max_program_ops = ml_collections.FieldReference(100_000, field_type=int)
  # Steps of fine-tuning the derived network from its inherited weights
  # before scoring it (0: score the inherited weights as they are).
  config.dnas.derived_finetune_steps = 0

  # method=radars | rl | random (radars_jax.radars)
  config.radars = ml_collections.ConfigDict()
  config.radars.max_iterations = 20
  config.radars.subspace_epochs = 2.0   # DNAS epochs in each sampled subspace
  config.radars.final_epochs = ml_collections.FieldReference(None, field_type=float)  # None: dnas.epochs
  config.radars.k = ml_collections.FieldReference(None, field_type=int)  # cap on ops per choice point
  config.radars.budget_margin = 0.05    # size k to (1 - margin) * budget
  # Fine-tune steps of each sample's derived network before scoring it
  # (dnas.derived_finetune_steps applies to the final search).
  config.radars.sample_finetune_steps = 0
  config.radars.cost_weight = 0.0       # reward -= cost_weight * derived weights (millions)
  config.radars.checkpoint_every_steps = 200  # DNAS state checkpoints inside long runs
  # Compile each batch's later subspaces in a background thread while the
  # earlier ones train, and the first shared program while the cost model
  # calibrates (same programs, same results).
  config.radars.compile_ahead = True
  # One train step for every sampled subspace of k ops (a switched supernet,
  # compiled once per k; used where its bytes fit the budget, same numbers
  # as each subspace's own program) instead of one compiled per sample.
  config.radars.shared_programs = True
  config.controller = controller.default_controller_config()
  return config


def complete(block: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `block` (`config.<name>`, perhaps with only some fields, as
  tests and scripts build it) with every field it lacks taken from
  `base_config()`: the defaults stay here, not in the code that reads them."""
  full = base_config()[name]
  with full.unlocked():
    full.update(block)
  return full
