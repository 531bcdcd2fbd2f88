"""Every config field with its default; config files change a few.

A config file (`configs/*.py`) defines `get_config()`, starting from
`base_config()`. Every field can be overridden on the command line, e.g.
`--config.dnas.epochs=3 --config.space.name=nb201`. The controller's block
(`controller_config`) and the training's (`train_config`, added by
`train.add_train_config`) are here too: the modules that read a field do
not restate its default.
"""
import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  """The whole config: the run's own fields, then one block per part of the
  library, each from its own function below (same fields, same order)."""
  config = ml_collections.ConfigDict()
  config.mode = "search"          # search | describe | train
  config.task = "images"          # images | agents (radars_jax.agents: method=a2d or radars)
  config.method = "single_darts"  # darts | single_darts | radars | rl | random | a2d
  config.seed = 0
  config.memory_budget_gb = ml_collections.FieldReference(None, field_type=float)
  config.log_every = 10           # steps between host syncs (metrics, progress)
  config.progress_bar = True
  # JAX's persistent compilation cache, shared by every run of the command
  # line: a repeated or similar run loads its programs instead of compiling
  # them (docs/performance.md). Its directory: compilation_cache_dir, else
  # $RADARS_JAX_CACHE_DIR, else $XDG_CACHE_HOME/radars_jax/xla (default
  # ~/.cache/radars_jax/xla); delete it to free the space. The searches
  # keep their cost model and calibration there too (radars_jax.measurements).
  config.compilation_cache = True
  config.compilation_cache_dir = ml_collections.FieldReference(None, field_type=str)
  config.distributed = distributed_config()
  config.search = search_config()

  config.data = data_config()
  config.space = space_config()
  config.supernet = supernet_config()
  config.dnas = dnas_config()
  config.radars = radars_config()
  config.hardware = hardware_config()
  config.controller = controller_config()
  config.agents = agents_config()
  return config


def complete(block: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `block` (`config.<name>`, perhaps with only some fields, as
  tests and scripts build it) with every field it lacks taken from
  `base_config()`: the defaults stay here, not in the code that reads them."""
  full = base_config()[name]
  if isinstance(block, ml_collections.ConfigDict):
    block = block.copy_and_resolve_references()   # (a placeholder's reference: its value)
  with full.unlocked():
    full.update(block)
  return full


def distributed_config() -> ml_collections.ConfigDict:
  """The `config.distributed` block: one run over several processes
  (hosts), `radars_jax.distributed`. Unset: one process."""
  c = ml_collections.ConfigDict()
  c.coordinator = ml_collections.FieldReference(None, field_type=str)  # "host:port" of process 0
  c.num_processes = ml_collections.FieldReference(None, field_type=int)
  c.process_id = ml_collections.FieldReference(None, field_type=int)   # this process's, from 0
  c.auto = False   # JAX detects the processes (Cloud TPU, SLURM, Open MPI, Kubernetes)
  return c


def search_config() -> ml_collections.ConfigDict:
  """The `config.search` block: what bounds a search (`radars_jax.time_limit`)."""
  c = ml_collections.ConfigDict()
  # seconds of search (every method but a2d); past them it stops, checkpointed, and says so
  c.max_seconds = ml_collections.FieldReference(None, field_type=float)
  # a compile or step still running this long past max_seconds: the process
  # ends, its stopped summary written, the last checkpoint kept (None: wait)
  c.overrun_seconds = ml_collections.FieldReference(60.0, field_type=float)
  return c


def data_config() -> ml_collections.ConfigDict:
  """The `config.data` block: which dataset, how it is split and batched,
  and the shape of the synthetic one (`radars_jax.data`)."""
  c = ml_collections.ConfigDict()
  # cifar10 | cifar100 | digits | synthetic (held on device), or read from
  # disk per batch (radars_jax.imagenet): imagenet2012 |
  # imagenet_resized/32x32 | imagenet_resized/64x64 | imagenette
  c.name = "digits"
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.download = True
  # cifar10 / cifar100: the path of the archive tfds downloads
  # (cifar-10-binary.tar.gz / cifar-100-binary.tar.gz), to prepare the
  # dataset from it without the network; None downloads.
  c.archive = ml_collections.FieldReference(None, field_type=str)
  c.train_size = ml_collections.FieldReference(None, field_type=int)
  c.test_size = ml_collections.FieldReference(None, field_type=int)
  # imagenet2012: the directory holding ILSVRC2012_img_train.tar and
  # ILSVRC2012_img_val.tar, which tfds prepares it from
  c.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.reader_threads = ml_collections.FieldReference(None, field_type=int)  # None: CPUs, <= 32
  c.holdout_size = 5000  # training examples kept out of search steps, for scoring
  c.split_seed = 0
  c.batch_size = 64
  c.eval_batch_size = 500
  c.crop_padding = 4     # DARTS augmentation: pad-and-crop, flip
  c.flip = True
  # synthetic: the images' side (None: 8); imagenet2012 / imagenette: the
  # side images are cropped to (None: 224)
  c.image_size = ml_collections.FieldReference(None, field_type=int)
  # synthetic only
  c.channels = 3
  c.num_classes = 10
  return c


def space_config() -> ml_collections.ConfigDict:
  """The `config.space` block: the search space by name, optionally cut to
  some ops (`radars_jax.nas.spaces`)."""
  c = ml_collections.ConfigDict()
  c.name = "darts"      # darts | darts_large | nb201 | mobile
  c.ops = ml_collections.FieldReference(None, field_type=str)  # "a,b,c"
  c.num_ops = ml_collections.FieldReference(None, field_type=int)
  # mobile: blocks per stage, "4,4,4,4,4,1" (None: that, ProxylessNAS's 21 blocks)
  c.blocks = ml_collections.FieldReference(None, field_type=str)
  c.squeeze_excite = False   # mobile: squeeze-and-excite in every MBConv block
  return c


def supernet_config() -> ml_collections.ConfigDict:
  """The `config.supernet` block: the supernet's size and how its edges are
  compiled (`radars_jax.nas.supernet`); every layout gives the same numbers."""
  c = ml_collections.ConfigDict()
  c.channels = 16
  c.layers = 8       # DARTS cells
  c.steps = 4        # nodes per DARTS cell (the darts spaces are built for 4)
  c.stem_multiplier = 3
  c.cells_per_stage = 5  # NAS-Bench-201 skeleton
  c.width_mult = 1.0     # mobile: every width scaled (radars_jax.nas.mobile)
  # The performance options: `auto` (a string, or None for the switches) is
  # picked by platform and method (radars_jax.performance, which says why).
  # Depthwise convs and pooling: xla | shifted | auto (radars_jax.nas.depthwise)
  c.depthwise_impl = "auto"
  # Each cell's edges in a lax.scan, each mixed op recomputed in the backward pass (same
  # numbers; whole-space DNAS only: a subspace whose edges differ runs per edge)
  c.scan_edges = config_dict.placeholder(bool)
  # RADARS's shared programs: each switched cell's edges in a lax.scan (same numbers to float
  # rounding, same weight paths)
  c.scan_switched = config_dict.placeholder(bool)
  # What the train step computes in: float32 | bfloat16 (activations; weights, optimiser
  # states and the loss stay float32) | auto (radars_jax.precision)
  c.compute_dtype = "auto"
  return c


def dnas_config() -> ml_collections.ConfigDict:
  """The `config.dnas` block: the DNAS (DARTS) search's schedule and
  optimisers, and the largest step it compiles (`radars_jax.dnas`)."""
  c = ml_collections.ConfigDict()
  c.epochs = 50
  c.order = 1            # method=darts: 1 first order, 2 second order
  c.inner_mode = "single_level"  # DNAS mode inside RADARS subspaces
  c.weight_lr = 0.025
  c.weight_lr_min = 0.001
  c.momentum = 0.9
  c.weight_decay = 3e-4
  c.grad_clip = 5.0
  c.alpha_lr = 3e-4
  c.alpha_betas = (0.5, 0.999)
  c.alpha_weight_decay = 1e-3
  c.alpha_init_scale = 1e-3
  # First order: the alpha pass and the weight pass as two iterations of one lax.scan
  # why: compile 39.3 vs 46.7 s, 3.09 vs 5.13 GB, but step 12.4 vs 9.3 s (docs/performance.md)
  c.passes_in_loop = False
  # The largest train step (StableHLO operations) compiled: XLA's compile
  # time and host memory grow faster than linearly with it, and the
  # largest programs crashed it (docs/performance.md). A larger one is
  # refused like a step over the memory budget (RADARS falls back to
  # smaller programs). None: no limit.
  c.max_program_ops = ml_collections.FieldReference(100_000, field_type=int)
  # Steps of fine-tuning the derived network from its inherited weights
  # before scoring it (0: score the inherited weights as they are).
  c.derived_finetune_steps = 0
  return c


def radars_config() -> ml_collections.ConfigDict:
  """The `config.radars` block, for method=radars | rl | random
  (`radars_jax.radars.loop`): the outer loop over sampled subspaces."""
  c = ml_collections.ConfigDict()
  c.max_iterations = 20
  c.subspace_epochs = 2.0   # DNAS epochs in each sampled subspace
  c.final_epochs = ml_collections.FieldReference(None, field_type=float)  # None: dnas.epochs
  c.k = ml_collections.FieldReference(None, field_type=int)  # cap on ops per choice point
  c.budget_margin = 0.05    # size k to (1 - margin) * budget
  # Fine-tune steps of each sample's derived network before scoring it
  # (dnas.derived_finetune_steps applies to the final search).
  c.sample_finetune_steps = 0
  c.checkpoint_every_steps = 200  # DNAS state checkpoints inside long runs
  # Compile each batch's later subspaces in a background thread while earlier ones train, and
  # the first shared program while the cost model calibrates (same programs, same results)
  # why: quickstart's three compiles 12.5 s side by side, 18.3 s in turn (docs/performance.md)
  c.compile_ahead = True
  # One train step for every sampled subspace of k ops (a switched supernet compiled once per
  # k, used where its bytes fit the budget; same numbers as each subspace's own program)
  # why: quickstart, 8 of its 9 DNAS runs on one compiled program (docs/performance.md)
  c.shared_programs = True
  # The knowledge pool (FNAS): a weight never trained starts from the most
  # similar trained one (the same op on another cell or edge, another kernel
  # size of its family; `radars_jax.nas.weight_pool`) instead of afresh.
  # why off: on the digits quickstart it lowered the final accuracy over 3 seeds
  # (docs/performance.md, "Knowledge pool")
  c.pool_similarity = False
  # Every sample of an iteration starts from the pool as the iteration
  # began (FNAS's strict fairness); their weights are written back when it
  # ends, in the order they ran. Off: each sample starts from its
  # predecessors' weights too
  c.fair_pool = False
  # The samples of an iteration train at the same time, one per row of
  # this many devices (a `(sample, data)` mesh, `radars_jax.parallel`), on
  # the shared program; needs fair_pool. 0: one after another, each on
  # every device
  c.devices_per_sample = 0
  return c


def hardware_config() -> ml_collections.ConfigDict:
  """The `config.hardware` block: the hardware-aware objective of
  method=radars | rl | random on images (`radars_jax.radars.hardware`)."""
  c = ml_collections.ConfigDict()
  c.metric = "params"       # params (weights) | flops (one image) | latency (seconds, this device)
  # The cost the found network should have, in the metric's unit; None:
  # the reward is the accuracy alone
  c.target = ml_collections.FieldReference(None, field_type=float)
  c.form = "tunas"          # mnas: acc * (cost/target)^weight; tunas: acc + weight * |cost/target - 1|
  c.weight = -0.07          # MNAS's and TuNAS's
  c.dnas_weight = 1.0       # the expected cost's term in each DNAS loss, times this (0: none)
  c.batch_size = 1          # images per timed forward pass (latency)
  return c


def controller_config() -> ml_collections.ConfigDict:
  """Every controller hyperparameter with its default (`config.controller`;
  `radars_jax.radars.controller` reads them). The subspace size k is not here:
  the caller sets it (from the memory budget)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.samples_per_iteration = 8     # subspaces sampled (and scored) per iteration
  # policy
  c.lr = 0.05                     # Adam on the logits
  c.max_grad_norm = 10.0
  c.ppo_epochs = 8                # full-batch PPO steps per iteration
  c.clip_eps = 0.2                # PPO ratio clip
  c.entropy_coef = 0.01           # times mean per-choice-point entropy
  c.normalize_advantages = True
  c.baseline = "counterfactual"   # counterfactual | subspace | batch_mean
  c.baseline_samples = 8          # k > 1: draws per choice point for the counterfactual baseline
  # replay (off-policy correction)
  c.replay_capacity = 512         # ring buffer entries
  c.replay_batch = 32             # replayed samples per PPO step
  c.replay_weight = 0.5           # weight of the replay term in the loss
  c.importance_clip = 1.0         # truncation c of pi_new / pi_behaviour
  # critic ensemble
  c.critic_members = 5
  c.critic_hidden = (64, 64)
  c.critic_lr = 3e-3
  c.critic_steps = 100            # full-batch Adam steps on the buffer per update
  c.critic_bootstrap = True       # Poisson(1) bootstrap weights per member
  c.uncertainty = "scale_advantage"  # scale_advantage | exploration_bonus | trust_critic | none
  c.uncertainty_scale = 0.5       # spread (in reward stds) at which confidence = 1/2
  # pruning
  c.prune_threshold = 0.05        # drop ops with probability below this
  # knowledge from an earlier search (`radars_jax.radars.knowledge`): the
  # WORKDIR of a radars / rl / random search whose critic (and, with
  # transfer_policy, whose policy as the prior) a new search starts from
  c.transfer_from = ml_collections.FieldReference(None, field_type=str)
  c.transfer_policy = False
  return c


def agents_config() -> ml_collections.ConfigDict:
  """The `config.agents` block, for `task=agents` (`radars_jax.agents.run`,
  `radars_jax.agents.radars_search`): the environment, PPO's settings for each
  phase, the agent supernet's size (its ops: `config.space`) and A2D's loss
  weights."""
  c = ml_collections.ConfigDict()
  c.env = "Breakout-MinAtar"   # gymnax: Breakout-/Asterix-/SpaceInvaders-/Freeway-MinAtar
  # the workdir of an earlier method=a2d run whose teacher is loaded (None: train one)
  c.teacher = ml_collections.FieldReference(None, field_type=str)
  # PPO updates (num_envs x num_steps environment steps each): 1000 is 8.2M steps, near
  # purejaxrl's 10M for MinAtar (Asterix's teacher scored 1.08 after 200; docs/performance.md)
  c.teacher_updates = 1000
  c.search_updates = 40
  c.retrain_updates = 200
  c.num_envs = 64              # PPO (purejaxrl's MinAtar settings, but for the passes:
  c.num_steps = 128            # on the CPU an update's minibatch steps are unrolled, and
  c.update_epochs = 2          # 4 x 8 copies of the supernet's gradient took minutes to
  c.num_minibatches = 4        # compile; 2 x 4: 55 s, docs/performance.md)
  c.lr = 5e-4
  c.ent_coef = 0.01
  c.channels = 8               # the agent supernet: a 3x3 stem to `channels`,
  c.cells = 1                  # `cells` NAS-Bench-201 cells,
  c.features = 32              # a dense layer of `features`, the policy and value heads
  # Adam on the alphas (dnas.alpha_betas, dnas.alpha_weight_decay): a search of tens of
  # updates makes hundreds of alpha steps, not DARTS's ~20,000, so a larger rate than
  # dnas.alpha_lr (at 3e-4, 40 updates left every op within 0.003 of uniform)
  c.alpha_lr = 0.01
  c.actor_weight = 1.0         # l_actor * KL(pi_teacher || pi_student)
  c.critic_weight = 0.5        # l_critic * (V_student - V_teacher)^2
  c.flops_weight = 0.1         # l_flops * E_alpha[multiply-adds] / the teacher's
  c.eval_episodes = 64         # whole episodes per evaluation
  # method=radars: PPO updates of A2D in each sampled subspace (the final search:
  # search_updates), and the episodes its derived agent is scored on (the reward)
  c.subspace_updates = 10
  c.reward_episodes = 32
  c.checkpoint_every = 20      # PPO updates between checkpoints
  c.baselines = True           # also plain DNAS and a small hand-designed agent
  c.undistilled = True         # also A2D's cell retrained without distillation (a2d_plain)
  return c


def train_config() -> ml_collections.ConfigDict:
  """The `config.train` block (`mode=train`, `radars_jax.retrain.train`): the DARTS
  CIFAR evaluation protocol. `train.add_train_config` adds it to a config."""
  t = ml_collections.ConfigDict()
  t.layers = 20                 # DARTS cells (reductions at 1/3 and 2/3)
  t.channels = 36               # initial channels
  t.batch_size = 96
  t.epochs = 600
  t.lr = 0.025                  # cosine (per epoch) from lr ...
  t.lr_min = 0.0                # ... to lr_min
  t.momentum = 0.9
  t.weight_decay = 3e-4
  t.grad_clip = 5.0             # global gradient norm
  t.cutout = 16                 # cutout square side (0: none)
  t.drop_path = 0.2             # final drop-path probability, ramped from 0
  t.auxiliary_weight = 0.4      # auxiliary head at 2/3 depth (0: no head)
  t.nb201_channels = 16         # NAS-Bench-201 genotypes: the NB201 skeleton
  t.nb201_cells_per_stage = 5
  t.mobile_width_mult = 1.0     # mobile genotypes: the widths' scale (radars_jax.nas.mobile)
  t.depthwise_impl = "auto"     # radars_jax.nas.depthwise, radars_jax.performance
  t.compute_dtype = "auto"      # float32 | bfloat16 | auto (radars_jax.precision)
  t.log_every = 50              # steps between host syncs (metrics, progress)
  t.eval_every = 0              # epochs between test evaluations (0: at the end only)
  t.checkpoint_every_steps = 1000
  t.max_to_keep = 3             # checkpoints kept
  t.label_smoothing = 0.0       # share of each target spread over all classes
  t.ema_decay = 0.0             # tested weights: their moving average (0: the last)
  return t
