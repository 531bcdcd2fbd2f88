"""Final training: retrain a genotype from scratch (`config.mode=train`).

    python -m radars_jax.main --config configs/cifar_train.py --workdir runs/v2
    python -m radars_jax.main --config configs/digits_train.py --workdir runs/d \\
        --config.genotype=runs/digits/genotype.json

The DARTS evaluation protocol, every number a field of `config.train`
(`add_train_config`): `layers` cells of `channels` initial channels, SGD with
momentum and weight decay, a learning rate following a cosine from `lr` to
`lr_min` over the epochs (set per epoch, as in DARTS), gradient clipping,
cutout, drop path ramped linearly from 0 to `drop_path` over the epochs, an
auxiliary head weighted `auxiliary_weight` (0: no head). NAS-Bench-201
genotypes train the NAS-Bench-201 network (`nb201_channels`,
`nb201_cells_per_stage`), mobile ones the mobile network
(`mobile_width_mult`), with the same optimiser, without drop path or head.

Sections: config; model; NAS-Bench-201 table; the run (data, checkpoint,
loop, evaluation); the compiled steps are in `retrain.steps`. Data-parallel
like the search: one mesh over all local devices, batches sharded, state
replicated. The latest checkpoint is always tried at start, and a restored
run ends with exactly the weights of an uninterrupted one (a step depends
only on the state, `retrain.steps`). Outputs in the workdir: `config.json`,
`checkpoints/`, `tensorboard/`, `metrics.jsonl`, `eval.json` (test
accuracy, weights, FLOPs, time, genotype) and `report/` (`radars_jax.report`:
the cell drawings, training curves, index.html).
"""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from radars_jax import checkpointing
from radars_jax import config_check
from radars_jax import config_defaults
from radars_jax import data as data_lib
from radars_jax import imagenet
from radars_jax.nas import genotypes as genotypes_lib
from radars_jax import metrics as metrics_lib
from radars_jax.retrain import networks
from radars_jax.retrain import steps as steps_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax import report
from radars_jax.tabular import table as table_lib
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

def add_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds `config.train`, `config.genotype` (a published name, a NAS-Bench-201
  arch string or a genotype.json path) and `config.table` (NAS-Bench-201
  CSV) where missing; fields already there are kept. Returns `config`."""
  with config.unlocked():
    if "genotype" not in config:
      config.genotype = ml_collections.FieldReference(None, field_type=str)
    if "table" not in config:
      config.table = ml_collections.FieldReference(None, field_type=str)
    if "train" not in config:
      config.train = config_defaults.train_config()
    else:
      defaults = config_defaults.train_config()
      with config.train.unlocked():
        for name in defaults:
          if name not in config.train:
            setattr(config.train, name, defaults[name])
  return config


def _train_config(config) -> ml_collections.ConfigDict:
  """`config.train`, with the training fields a config lacks added first."""
  return add_train_config(config).train


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def build_model(genotype: dict, num_classes: int, train_config, auxiliary: bool | None = None):
  """The eval network of `genotype` (DARTS, NAS-Bench-201 or mobile) at the sizes of
  `train_config`; with the auxiliary head if `auxiliary` (by default, when
  `auxiliary_weight` > 0)."""
  if auxiliary is None:
    auxiliary = float(train_config.auxiliary_weight) > 0
  return networks.build_network(
      genotype, num_classes, channels=int(train_config.channels),
      layers=int(train_config.layers), auxiliary=auxiliary,
      nb201_channels=int(train_config.nb201_channels),
      nb201_cells_per_stage=int(train_config.nb201_cells_per_stage),
      mobile_width_mult=float(train_config.mobile_width_mult),
      depthwise_impl=train_config.depthwise_impl)


def describe_genotype(config) -> dict:
  """`mode=describe` for `config.genotype`: the eval network's weights (with
  and without the auxiliary head) and FLOPs (multiply-adds of convolutions
  and dense layers for one image of `config.data`'s shape). Nothing runs."""
  train_config = _train_config(config)
  genotype = genotypes_lib.load_genotype(config.genotype)
  image_shape, num_classes = data_lib.dataset_spec(config.data)
  model = build_model(genotype, num_classes, train_config, auxiliary=True)
  try:
    info = networks.describe_network(model, image_shape)
  except UserError:  # the head does not fit images this small
    model = build_model(genotype, num_classes, train_config, auxiliary=False)
    info = networks.describe_network(model, image_shape)
    info["weights_with_auxiliary"] = None
  kind = genotypes_lib.network_kind(genotype)
  return {
      "genotype": genotype, "network": kind,
      "dataset": config.data.name, "image_shape": list(image_shape),
      "num_classes": num_classes,
      "layers": int(train_config.layers) if kind == "darts" else None,
      "channels": {"darts": int(train_config.channels),
                   "nb201": int(train_config.nb201_channels)}.get(kind),
      "width_mult": float(train_config.mobile_width_mult) if kind == "mobile" else None,
      "weights": info["weights"],
      "weights_with_auxiliary": info["weights_with_auxiliary"],
      "flops": info["macs"],
      "flops_unit": "multiply-adds of convolutions and dense layers, one image",
  }


# ---------------------------------------------------------------------------
# NAS-Bench-201 table
# ---------------------------------------------------------------------------

def nb201_table_entry(path: str, genotype: dict) -> dict:
  """The row of a NAS-Bench-201 CSV (`arch_str` plus metric columns) for a
  nb201 genotype, numbers as floats. UserError if the file, the column or
  the architecture is missing."""
  target = tuple(table_lib.NB201_OPS.index(op) for op in genotype["ops"])
  if not Path(path).is_file():
    raise UserError(f"table not found: {path} (a NAS-Bench-201 CSV with an arch_str column)")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    if "arch_str" not in (reader.fieldnames or []):
      raise UserError(f"table {path} has no arch_str column "
                      f"(columns: {', '.join(reader.fieldnames or [])})")
    for row in reader:
      if table_lib.ops_from_arch_str(row["arch_str"] or "") == target:
        entry = {}
        for name, value in row.items():
          try:
            entry[name] = float(value) if name != "arch_str" else value
          except (TypeError, ValueError):
            entry[name] = value
        return entry
  raise UserError(f"architecture {genotype['arch_str']} is not in table {path}")


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataFacts:
  """What the spec needs to know of a dataset."""
  name: str
  image_shape: tuple[int, ...]
  num_classes: int
  num_examples: int            # training examples
  mean: tuple[float, ...]
  std: tuple[float, ...]


def _setup(config, genotype: dict, facts: DataFacts, mesh) -> steps_lib.TrainSpec:
  """The run's spec; checks the batch against the data and the devices."""
  t = config.train
  cells = genotypes_lib.network_kind(genotype) == "darts"   # drop path and the head
  parallel.check_divisible(int(t.batch_size), mesh, "train.batch_size")
  if facts.num_examples // int(t.batch_size) < 1:
    raise UserError(f"train.batch_size={t.batch_size} is larger than the "
                    f"{facts.num_examples} training examples of {facts.name}")
  auxiliary = cells and float(t.auxiliary_weight) > 0
  model = build_model(genotype, facts.num_classes, t, auxiliary=auxiliary)
  return steps_lib.TrainSpec.from_config(
      config, model, facts.image_shape, facts.num_examples, facts.mean, facts.std,
      drop_path=float(t.drop_path) if cells else 0.0,
      auxiliary_weight=float(t.auxiliary_weight) if auxiliary else 0.0)


def load_trained_state(config, workdir) -> tuple[int, steps_lib.TrainState] | None:
  """`(step, state)` of the latest checkpoint of a training workdir run with
  `config` (None if there is none): the trained `params` and `batch_stats`."""
  _train_config(config)
  config_check.check_config(config, mode="train")
  genotype = genotypes_lib.load_genotype(config.genotype)
  mesh = parallel.make_mesh()
  image_shape, num_classes = data_lib.dataset_spec(config.data)
  # (only shapes matter here)
  facts = DataFacts(config.data.name, image_shape, num_classes,
                    int(config.train.batch_size), (0.0,) * image_shape[-1],
                    (1.0,) * image_shape[-1])
  spec = _setup(config, genotype, facts, mesh)
  template = jax.eval_shape(steps_lib.program(spec, mesh).init,
                            jax.random.key(int(config.seed)))
  replicated = parallel.replicated(mesh)
  template = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), template)
  with checkpointing.Checkpointer(Path(workdir) / "checkpoints") as ckpt:
    restored = ckpt.restore_latest(template)
  return None if restored is None else (restored[0], restored[1])


@dataclasses.dataclass
class _Run:
  """The fixed parts of one training run: the mesh, the data (on device or
  on disk), the
  spec and its compiled program."""
  mesh: Any
  replicated: Any              # the state's sharding (replicated over the mesh)
  dataset_name: str
  spec: steps_lib.TrainSpec
  prog: steps_lib.Program
  size: dict                   # `networks.describe_network`: weights, macs
  train_split: data_lib.Split    # on device, or on disk (`imagenet.RecordSplit`)
  test_split: data_lib.Split
  batches: Callable | None       # `(key, step) -> batch` of a split on disk
  data_key: jax.Array            # the key of the batch order

  def train_step(self, state: steps_lib.TrainState, step: int) -> steps_lib.TrainState:
    if self.batches is None:
      return self.prog.train_step(state, self.train_split)
    return self.prog.train_on_batch(state, self.batches(self.data_key, step))

  def evaluate(self, state: steps_lib.TrainState, batch_size: int) -> dict:
    return self.prog.evaluator.evaluate(steps_lib.evaluated_weights(state), self.test_split,
                                        batch_size)


@dataclasses.dataclass
class _Progress:
  """What the run has recorded besides its state, saved as each checkpoint's
  metadata so that a resumed run reports what an uninterrupted one does."""
  start_time: float            # `time.perf_counter()` at this process's start
  history: list[dict] = dataclasses.field(default_factory=list)  # test evaluations
  train_loss: float = float("nan")      # of the last log window
  train_accuracy: float = float("nan")
  seconds_before: float = 0.0  # spent by the runs before a resume
  resumed_from_step: int | None = None

  def seconds(self) -> float:
    return self.seconds_before + time.perf_counter() - self.start_time

  def metadata(self, step: int, steps_per_epoch: int) -> dict:
    return {"history": self.history, "epoch": step / steps_per_epoch,
            "train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
            "seconds": self.seconds()}


def run_training(config, workdir) -> dict:
  """Trains `config.genotype` from scratch (resuming from the workdir's
  latest checkpoint), evaluates on the test split, writes eval.json and the
  report (WORKDIR/report/).
  Returns the eval.json dict."""
  progress = _Progress(time.perf_counter())
  t = _train_config(config)
  config_check.check_config(config, mode="train")
  genotype = genotypes_lib.load_genotype(config.genotype)
  path, table_entry = _prepare_workdir(config, genotype, workdir)
  config, options = performance.start_run(config, "train")
  run = _build_run(config, genotype)
  state = run.prog.init(jax.random.key(int(config.seed)))
  # (always resume from the latest checkpoint)
  ckpt = checkpointing.Checkpointer(path / "checkpoints", max_to_keep=int(t.max_to_keep))
  state, start_step = _restore(ckpt, path, state, progress, run.spec.total_steps)
  writer = metrics_lib.MetricWriter(path / "tensorboard", path / "metrics.jsonl")
  try:
    state, result = _train_loop(config, run, state, start_step, progress, ckpt, writer)
  finally:
    writer.close()
    ckpt.close()
  summary = _summary(config, genotype, run, state, result, progress)
  summary["performance_options"] = options
  if table_entry is not None:
    summary["table"] = {"path": str(config.table), **table_entry}
  workdir_lib.write_json(path / "eval.json", summary)
  report.write_report(path)
  return summary


def _prepare_workdir(config, genotype: dict, workdir) -> tuple[Path, dict | None]:
  """Makes the workdir and writes its config.json; returns it and the
  genotype's NAS-Bench-201 table entry (`config.table`; None without one),
  printed so that the run's log shows what the table expects."""
  table_entry = None
  if config.table:
    if genotypes_lib.is_nb201(genotype):
      table_entry = nb201_table_entry(config.table, genotype)
    else:
      print("radars_jax: config.table is ignored: the genotype is not a NAS-Bench-201 cell")
  path = workdir_lib.prepare(workdir)
  workdir_lib.write_json(path / "config.json", config.to_dict())
  if table_entry is not None:
    print(f"NAS-Bench-201 table {config.table}: {genotype['arch_str']}: " + ", ".join(
        f"{k}={v}" for k, v in table_entry.items() if k != "arch_str"))
  return path, table_entry


def _build_run(config, genotype: dict) -> _Run:
  """The mesh, the dataset on device (replicated), the spec and its program."""
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  if imagenet.is_streamed(config.data.name):
    ds = imagenet.open_dataset(config.data)
    train_split, test_split, n = ds.train, ds.test, ds.train.num_examples
  else:
    ds = data_lib.load_dataset(config.data)
    train_split = data_lib.to_device(ds.train_images, ds.train_labels, replicated)
    test_split = data_lib.to_device(ds.test_images, ds.test_labels, replicated)
    n = len(ds.train_labels)
  facts = DataFacts(ds.name, tuple(ds.image_shape), ds.num_classes, n, tuple(ds.mean),
                    tuple(ds.std))
  spec = _setup(config, genotype, facts, mesh)
  prog = steps_lib.program(spec, mesh)
  size = networks.describe_network(spec.model, ds.image_shape)
  batches = None
  if not isinstance(train_split, data_lib.DeviceSplit):
    batches = train_split.batch_fn(spec.batch_size, spec.mean, spec.std,
                                   pad=spec.crop_padding, flip=spec.flip,
                                   sharding=parallel.batch_sharded(mesh))
  data_key = steps_lib.data_key(jax.random.key(int(config.seed)))
  return _Run(mesh, replicated, ds.name, spec, prog, size, train_split, test_split, batches,
              data_key)


def _restore(ckpt: checkpointing.Checkpointer, path: Path, state: steps_lib.TrainState,
             progress: _Progress, total_steps: int) -> tuple[steps_lib.TrainState, int]:
  """`(state, its step)` from the latest checkpoint in the workdir `path`,
  if there is one (its metadata into `progress`), else `state` as it is.
  Closes `ckpt` on an error (the caller's `finally` does not cover this part)."""
  try:
    restored = ckpt.restore_latest(state)
  except BaseException:
    ckpt.close()
    raise
  if restored is not None:
    step, state, meta = restored
    # (`_Progress.metadata` writes every key; the fallbacks are for a
    # checkpoint without metadata, which `restore_latest` returns as {})
    progress.history = list(meta.get("history", []))
    progress.seconds_before = float(meta.get("seconds", 0.0))
    progress.train_loss = float(meta.get("train_loss", float("nan")))
    progress.train_accuracy = float(meta.get("train_accuracy", float("nan")))
    progress.resumed_from_step = int(step)
  start_step = int(jax.device_get(state.step))
  if start_step > total_steps:
    ckpt.close()
    raise UserError(f"the checkpoint in {path / 'checkpoints'} is at step {start_step}, "
                    f"beyond this run's {total_steps} steps; use a new workdir")
  return state, start_step


def _train_loop(config, run: _Run, state: steps_lib.TrainState, start_step: int,
                progress: _Progress, ckpt: checkpointing.Checkpointer,
                writer: metrics_lib.MetricWriter) -> tuple[steps_lib.TrainState, dict]:
  """The steps from `start_step` to the last, each log window's metrics
  read, test evaluations and checkpoints on their schedules
  (`config.train`); then the final evaluation (and checkpoint, unless the
  run was already complete). Returns the final state and its test result."""
  t, spec = config.train, run.spec
  steps_per_epoch, total_steps = spec.steps_per_epoch, spec.total_steps
  eval_batch = int(config.data.eval_batch_size)
  log_every = max(1, int(t.log_every))
  eval_every_steps = int(t.eval_every) * steps_per_epoch
  ckpt_every = int(t.checkpoint_every_steps)
  bar = metrics_lib.progress_bar(total_steps, "train", initial=start_step,
                                 enabled=config.progress_bar)
  try:
    for step in range(start_step, total_steps):
      state = run.train_step(state, step)
      done = step + 1
      bar.update(1)
      if done % log_every == 0 or done == total_steps:
        state = _log_window(state, run, step, progress, writer, bar)
      if eval_every_steps and done % eval_every_steps == 0 and done < total_steps:
        result = run.evaluate(state, eval_batch)
        progress.history.append({"step": done, "epoch": done // steps_per_epoch,
                                 "test_accuracy": result["accuracy"],
                                 "test_loss": result["loss"]})
        writer.scalars(done, result, prefix="test/")
        bar.write(f"epoch {done // steps_per_epoch}: test accuracy {result['accuracy']:.4f}")
      if ckpt_every and done % ckpt_every == 0 and done < total_steps:
        ckpt.save(done, state, progress.metadata(done, steps_per_epoch))
    result = run.evaluate(state, eval_batch)
    if start_step < total_steps:
      progress.history.append({"step": total_steps, "epoch": spec.epochs,
                               "test_accuracy": result["accuracy"], "test_loss": result["loss"]})
      ckpt.save(total_steps, state, progress.metadata(total_steps, steps_per_epoch))
    writer.scalars(total_steps, result, prefix="test/")
  finally:
    bar.close()
  return state, result


def _log_window(state: steps_lib.TrainState, run: _Run, step: int, progress: _Progress,
                writer: metrics_lib.MetricWriter, bar) -> steps_lib.TrainState:
  """Reads the metrics summed since the last log (the loop's one host
  sync), stops on a non-finite loss, logs their means and restarts the sums."""
  spec, done = run.spec, step + 1
  sums = jax.device_get(state.metrics)
  count = max(float(sums["count"]), 1.0)
  progress.train_loss = float(sums["loss"]) / count
  progress.train_accuracy = float(sums["accuracy"]) / count
  if not np.isfinite(progress.train_loss):
    raise FloatingPointError(f"train: loss is {progress.train_loss} at step {done}; lower "
                             "train.lr or check the data")
  state = state.replace(metrics=jax.device_put(steps_lib.zero_metrics(), run.replicated))
  bar.set_postfix(epoch=f"{-(-done // spec.steps_per_epoch)}/{spec.epochs}",
                  loss=f"{progress.train_loss:.3f}", acc=f"{progress.train_accuracy:.3f}")
  writer.scalars(done, {"loss": progress.train_loss, "accuracy": progress.train_accuracy,
                        "lr": float(spec.learning_rate(step)),
                        "drop_path": float(spec.drop_prob(step) or 0.0)},
                 prefix="train/")
  return state


def _summary(config, genotype: dict, run: _Run, state: steps_lib.TrainState, result: dict,
             progress: _Progress) -> dict:
  """eval.json: the test result, the network's size, the run's shape and
  history."""
  spec = run.spec
  return {
      "genotype": genotype, "network": genotypes_lib.network_kind(genotype),
      "dataset": run.dataset_name, "seed": int(config.seed),
      "test_accuracy": result["accuracy"], "test_loss": result["loss"],
      "train_loss": progress.train_loss, "train_accuracy": progress.train_accuracy,
      "weights": run.size["weights"],
      "weights_with_auxiliary": networks.count_weights(state.params, include_auxiliary=True),
      "flops": run.size["macs"],
      "flops_unit": "multiply-adds of convolutions and dense layers, one image",
      "epochs": spec.epochs, "steps": spec.total_steps, "steps_per_epoch": spec.steps_per_epoch,
      "batch_size": spec.batch_size,
      "resumed_from_step": progress.resumed_from_step,
      "seconds": progress.seconds(),
      "devices": int(run.mesh.devices.size), "history": progress.history,
  }
