"""Every check of a run's config, before anything is built or written.

    check_config(config)    # UserError (one line) naming the first bad field

`FIELDS` holds one rule per user-facing field (`config_defaults`,
`config_defaults.controller_config`, `config_defaults.train_config`,
`config.genotype`, `config.table` and the tabular `config.table` block): its
type, its range or its names. `check_config` walks every field the config
has (a field no rule knows, such as a misspelt one in a config file, is an
error too), then checks what depends on several fields or on the data's
size (batch and holdout against the split, the device count, the method's
combinations of supernet and DNAS switches) and the files a run reads.
`radars_jax.main` turns the `UserError` into one line on stderr and exit
status 2 before the workdir is touched. The loaders (`data`, `tabular.table`,
`supernet`) keep guards of their own for callers that use them without a
config; the controller has none: its config is checked here.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from radars_jax.agents import envs as agent_envs
from radars_jax.agents import supernet as agent_supernet
from radars_jax.radars import controller as controller_lib
from radars_jax import data as data_lib
from radars_jax import imagenet
from radars_jax import precision
from radars_jax.nas import depthwise
from radars_jax.dnas import steps as dnas_lib
from radars_jax.nas import genotypes as genotypes_lib
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.tabular import strategies as tabular_strategies
from radars_jax.tabular import table as tabular_table
from radars_jax.errors import UserError

MODES = ("search", "describe", "train", "tabular")
METHODS = ("darts", "single_darts", "radars", "rl", "random", "a2d")
TASKS = ("images", "agents")
AGENT_METHODS = ("a2d", "radars")   # task=agents


# ---------------------------------------------------------------------------
# Rules: one per field
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
  """What one field accepts. `check(value)` returns None or what is wrong."""
  kind: str                       # "int" | "float" | "bool" | "str" | "choice" | "floats"
  low: float | None = None        # inclusive unless low_open
  high: float | None = None       # exclusive unless high_closed
  low_open: bool = False
  high_closed: bool = False
  choices: tuple = ()
  optional: bool = False          # None allowed
  length: int | None = None       # "floats": the tuple's length
  noun: str = "value"             # "choice": what a choice is ("unknown method")

  def expects(self) -> str:
    if self.kind == "choice":
      text = "one of " + ", ".join(map(str, self.choices))
    elif self.kind == "floats":
      what = f"{self.length} numbers" if self.length else "a tuple of numbers"
      text = what + self._range_text()
    else:
      noun = {"int": "an integer", "float": "a number", "bool": "True or False",
              "str": "a non-empty string"}[self.kind]
      text = noun + self._range_text()
    return text + (" or None" if self.optional else "")

  def _range_text(self) -> str:
    low = None if self.low is None else ("> " if self.low_open else ">= ") + f"{self.low:g}"
    high = None if self.high is None else ("<= " if self.high_closed else "< ") + f"{self.high:g}"
    parts = [p for p in (low, high) if p]
    return (" " + " and ".join(parts)) if parts else ""

  def _chosen(self, value) -> bool:
    return any(type(value) is type(c) and value == c for c in self.choices)

  def _in_range(self, x: float) -> bool:
    if not math.isfinite(x):
      return False
    if self.low is not None and (x <= self.low if self.low_open else x < self.low):
      return False
    if self.high is not None and (x > self.high if self.high_closed else x >= self.high):
      return False
    return True

  def check(self, value) -> str | None:
    if self.kind == "choice" and value is not None and not self._chosen(value):
      return (f"unknown {self.noun}; choose one of {', '.join(map(str, self.choices))}"
              + (" or None" if self.optional else ""))
    if value is None:
      return None if self.optional else f"must be {self.expects()}"
    ok = True
    if self.kind == "int":
      ok = _is_int(value) and self._in_range(float(value))
    elif self.kind == "float":
      ok = _is_number(value) and self._in_range(float(value))
    elif self.kind == "bool":
      ok = isinstance(value, (bool, np.bool_))
    elif self.kind == "str":
      ok = isinstance(value, str) and bool(value.strip())
    elif self.kind == "choice":
      ok = self._chosen(value)
    elif self.kind == "floats":
      ok = (isinstance(value, (tuple, list))
            and (self.length is None or len(value) == self.length) and len(value) > 0
            and all(_is_number(v) and self._in_range(float(v)) for v in value))
    return None if ok else f"must be {self.expects()}"


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
      value, (bool, np.bool_))


def _int(low=None, high=None, optional=False, high_closed=True) -> Rule:
  return Rule("int", low, high, high_closed=high_closed, optional=optional)


def _float(low=None, high=None, low_open=False, high_closed=False, optional=False) -> Rule:
  return Rule("float", low, high, low_open=low_open, high_closed=high_closed,
              optional=optional)


def _positive(optional=False) -> Rule:
  return _float(0.0, low_open=True, optional=optional)


def _fraction() -> Rule:
  return _float(0.0, 1.0)   # [0, 1)


_BOOL = Rule("bool")
_STR = Rule("str")
_OPTIONAL_STR = Rule("str", optional=True)


def _choice(*choices, noun="value", optional=False) -> Rule:
  return Rule("choice", choices=tuple(choices), optional=optional, noun=noun)


FIELDS: dict[str, Rule] = {
    # top level
    "mode": _choice(*MODES, noun="mode"),
    "task": _choice(*TASKS, noun="task"),
    "method": _choice(*METHODS, noun="method"),
    "seed": _int(0),
    "memory_budget_gb": _positive(optional=True),
    "log_every": _int(1),
    "progress_bar": _BOOL,
    "compilation_cache": _BOOL,
    "compilation_cache_dir": _OPTIONAL_STR,
    "genotype": _OPTIONAL_STR,      # checked further by `_check_files`
    "table": _OPTIONAL_STR,         # training: a NAS-Bench-201 CSV (tabular: the block below)
    # data
    "data.name": _choice(*data_lib.DATASET_NAMES, noun="dataset"),
    "data.data_dir": _OPTIONAL_STR,
    "data.archive": _OPTIONAL_STR,  # checked further by `_check_files`
    "data.download": _BOOL,
    "data.train_size": _int(1, optional=True),
    "data.test_size": _int(1, optional=True),
    "data.holdout_size": _int(1),
    "data.split_seed": _int(0),
    "data.batch_size": _int(1),
    "data.eval_batch_size": _int(1),
    "data.crop_padding": _int(0),
    "data.flip": _BOOL,
    "data.image_size": _int(1, optional=True),
    "data.manual_dir": _OPTIONAL_STR,   # checked further by `_check_files`
    "data.reader_threads": _int(1, optional=True),
    "data.channels": _int(1),
    "data.num_classes": _int(2),
    # distributed (radars_jax.distributed)
    "distributed.coordinator": _OPTIONAL_STR,
    "distributed.num_processes": _int(1, optional=True),
    "distributed.process_id": _int(0, optional=True),
    "distributed.auto": _BOOL,
    "search.max_seconds": _positive(optional=True),
    "search.overrun_seconds": _float(0.0, optional=True),
    # space
    "space.name": _choice(*spaces_lib.SPACE_NAMES, noun="space"),
    "space.ops": _OPTIONAL_STR,
    "space.num_ops": _int(1, optional=True),
    "space.blocks": _OPTIONAL_STR,
    "space.squeeze_excite": _BOOL,
    # supernet
    "supernet.channels": _int(1),
    "supernet.layers": _int(1),
    "supernet.steps": _int(1),
    "supernet.stem_multiplier": _int(1),
    "supernet.cells_per_stage": _int(1),
    "supernet.width_mult": _positive(),
    "supernet.depthwise_impl": _choice(*depthwise.IMPLEMENTATIONS, noun="implementation"),
    "supernet.scan_edges": Rule("bool", optional=True),      # None: auto
    "supernet.scan_switched": Rule("bool", optional=True),
    "supernet.compute_dtype": _choice(*precision.CHOICES, noun="compute dtype"),
    # dnas
    "dnas.epochs": _int(1),
    "dnas.order": _choice(1, 2, noun="order"),
    "dnas.inner_mode": _choice(*dnas_lib.MODES, noun="DNAS mode"),
    "dnas.weight_lr": _positive(),
    "dnas.weight_lr_min": _float(0.0),
    "dnas.momentum": _fraction(),
    "dnas.weight_decay": _float(0.0),
    "dnas.grad_clip": _positive(),
    "dnas.alpha_lr": _positive(),
    "dnas.alpha_betas": Rule("floats", 0.0, 1.0, length=2),
    "dnas.alpha_weight_decay": _float(0.0),
    "dnas.alpha_init_scale": _float(0.0),
    "dnas.passes_in_loop": _BOOL,
    "dnas.max_program_ops": _int(1, optional=True),
    "dnas.derived_finetune_steps": _int(0),
    # radars | rl | random
    "radars.max_iterations": _int(1),
    "radars.subspace_epochs": _positive(),
    "radars.final_epochs": _positive(optional=True),
    "radars.k": _int(1, optional=True),
    "radars.budget_margin": _fraction(),
    "radars.sample_finetune_steps": _int(0),
    "radars.checkpoint_every_steps": _int(0),
    "radars.compile_ahead": _BOOL,
    "radars.shared_programs": _BOOL,
    "radars.pool_similarity": _BOOL,
    "radars.fair_pool": _BOOL,
    "radars.devices_per_sample": _int(0),   # checked further by `_check_parallel_samples`
    # hardware (radars_jax.radars.hardware)
    "hardware.metric": _choice("params", "flops", "latency", noun="metric"),
    "hardware.target": _positive(optional=True),   # checked further by `_check_hardware`
    "hardware.form": _choice("mnas", "tunas", noun="form"),
    "hardware.weight": _float(high=0.0, high_closed=True),
    "hardware.dnas_weight": _float(0.0),
    "hardware.batch_size": _int(1),
    # controller
    "controller.seed": _int(0),
    "controller.samples_per_iteration": _int(1),
    "controller.lr": _positive(),
    "controller.max_grad_norm": _positive(),
    "controller.ppo_epochs": _int(1),
    "controller.clip_eps": _positive(),
    "controller.entropy_coef": _float(0.0),
    "controller.normalize_advantages": _BOOL,
    "controller.baseline": _choice(*controller_lib.BASELINE_MODES, noun="baseline"),
    "controller.baseline_samples": _int(1),
    "controller.replay_capacity": _int(1),
    "controller.replay_batch": _int(0),
    "controller.replay_weight": _float(0.0),
    "controller.importance_clip": _positive(),
    "controller.critic_members": _int(1),
    "controller.critic_hidden": Rule("floats", 1.0),   # integers, checked below
    "controller.critic_lr": _positive(),
    "controller.critic_steps": _int(1),
    "controller.critic_bootstrap": _BOOL,
    "controller.uncertainty": _choice(*controller_lib.UNCERTAINTY_MODES,
                                       noun="use of the uncertainty"),
    "controller.uncertainty_scale": _positive(),
    "controller.prune_threshold": _fraction(),
    "controller.transfer_from": _OPTIONAL_STR,   # checked further by `_check_files`
    "controller.transfer_policy": _BOOL,
    # agents (method=a2d)
    "agents.env": _choice(*agent_envs.ENV_NAMES, noun="environment"),
    "agents.teacher": _OPTIONAL_STR,   # checked further by `_check_agents`
    "agents.teacher_updates": _int(1),
    "agents.search_updates": _int(1),
    "agents.retrain_updates": _int(1),
    "agents.num_envs": _int(1),
    "agents.num_steps": _int(1),
    "agents.update_epochs": _int(1),
    "agents.num_minibatches": _int(1),
    "agents.lr": _positive(),
    "agents.ent_coef": _float(0.0),
    "agents.channels": _int(1),
    "agents.cells": _int(1),
    "agents.features": _int(1),
    "agents.alpha_lr": _positive(),
    "agents.actor_weight": _float(0.0),
    "agents.critic_weight": _float(0.0),
    "agents.flops_weight": _float(0.0),
    "agents.eval_episodes": _int(1),
    "agents.subspace_updates": _int(1),
    "agents.reward_episodes": _int(1),
    "agents.checkpoint_every": _int(1),
    "agents.baselines": _BOOL,
    "agents.undistilled": _BOOL,
    # train (mode=train)
    "train.layers": _int(1),
    "train.channels": _int(1),
    "train.batch_size": _int(1),
    "train.epochs": _int(1),
    "train.lr": _float(0.0),
    "train.lr_min": _float(0.0),
    "train.momentum": _fraction(),
    "train.weight_decay": _float(0.0),
    "train.grad_clip": _float(0.0),
    "train.cutout": _int(0),
    "train.drop_path": _fraction(),
    "train.auxiliary_weight": _float(0.0),
    "train.nb201_channels": _int(1),
    "train.nb201_cells_per_stage": _int(1),
    "train.mobile_width_mult": _positive(),
    "train.depthwise_impl": _choice(*depthwise.IMPLEMENTATIONS, noun="implementation"),
    "train.compute_dtype": _choice(*precision.CHOICES, noun="compute dtype"),
    "train.log_every": _int(0),
    "train.eval_every": _int(0),
    "train.checkpoint_every_steps": _int(0),
    "train.max_to_keep": _int(1),
    "train.label_smoothing": _fraction(),
    "train.ema_decay": _fraction(),
    # table (mode=tabular)
    "table.path": _STR,
    "table.metric": _STR,
    "table.report": _STR,
    "table.queries": _int(1, tabular_table.NUM_ARCHS),
    "table.seeds": _int(1),
    "table.methods": _STR,
    "table.transfer_path": _OPTIONAL_STR,   # ppo_transfer's earlier task (a table)
    "table.transfer_metric": _OPTIONAL_STR,
    "table.transfer_queries": _int(1, tabular_table.NUM_ARCHS, optional=True),
}


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """`{"data.batch_size": 64, ...}`: every field of `config` that is not a block."""
  out = {}
  for name in config.keys():
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      out.update(leaves(value, f"{prefix}{name}."))
    else:
      out[f"{prefix}{name}"] = value
  return out


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------

def check_config(config: ml_collections.ConfigDict, mode: str | None = None) -> None:
  """Raises UserError (one line) for the first bad field of `config`, run
  as `mode` (default `config.mode`)."""
  check_fields(config)
  mode = config.mode if mode is None else mode
  if config.method == "a2d" and config.task != "agents":
    raise UserError("method=a2d searches agents: set task=agents (configs/minatar.py does)")
  if config.task == "agents" and mode not in ("search", "describe"):
    raise UserError(f"task=agents runs mode=search (which retrains and evaluates the agent "
                    f"it finds) or describe, not mode={mode}")
  if mode in ("search", "describe"):
    if config.task == "agents":
      _check_agents(config, mode)
    else:
      _check_search(config, mode)
      _check_divisible(int(config.data.batch_size), "data.batch_size")
      if mode == "search":
        _check_search_data(config)
    _check_parallel_samples(config)
    _check_hardware(config)
  if mode == "train":
    _check_train(config)
  # (`table` and `genotype` are optional: only training and tabular configs have them)
  if mode == "tabular" and not isinstance(config.get("table"), ml_collections.ConfigDict):
    raise UserError("mode=tabular needs the config.table block (path, metric, report, "
                    "queries, seeds, methods; see configs/nb201_table.py)")
  _check_files(config)


def check_fields(config: ml_collections.ConfigDict, prefix: str = "") -> None:
  """Every field on its own: known, of its type, in its range or names.
  `prefix`: `config` is the block of that name (e.g. "controller.")."""
  for name, value in leaves(config, prefix).items():
    rule = FIELDS.get(name)
    if rule is None:
      raise UserError(f"config.{name} is not a radars_jax config field "
                      "(misspelt in the config file?)")
    problem = rule.check(value)
    if problem is None and name == "controller.critic_hidden":
      problem = None if all(_is_int(v) for v in value) else "must be a tuple of integers >= 1"
    if problem is not None:
      raise UserError(f"config.{name}={value!r}: {problem}")
  if config.get("space") is not None:   # (a block checked alone has none)
    spaces_lib.space_from_config(config.space)   # unknown ops, num_ops, blocks


def _check_search(config, mode: str) -> None:
  """Combinations of method, budget, supernet and DNAS settings."""
  supernet = config.supernet
  _check_radars_budget(config, mode)
  check_performance_options(config)
  space = spaces_lib.space_from_config(config.space)
  if space.kind == "darts_cell" and supernet.steps != spaces_lib.DARTS_STEPS:
    raise UserError(f"supernet.steps={supernet.steps}: space {space.name!r} is built for "
                    f"DARTS cells of {spaces_lib.DARTS_STEPS} nodes: set "
                    f"supernet.steps={spaces_lib.DARTS_STEPS}")


def _check_hardware(config) -> None:
  """`hardware.target`: the samples of radars, rl or random on images, and
  DNAS steps that take the expected cost's term."""
  if config.hardware.target is None:
    return
  where = f"hardware.target={config.hardware.target}"
  if config.task == "agents":
    raise UserError(f"{where}: task=agents costs multiply-adds inside each subspace's search "
                    "(agents.flops_weight): leave hardware.target unset")
  if config.method in dnas_lib.DNAS_METHODS:
    raise UserError(f"{where} aims the samples of method=radars, rl or random; "
                    f"method={config.method} has none: leave it unset")
  if config.dnas.passes_in_loop and float(config.hardware.dnas_weight):
    raise UserError(f"{where} adds the expected cost to the DNAS loss, which "
                    "dnas.passes_in_loop=True does not take: set hardware.dnas_weight=0 or "
                    "passes_in_loop=False")


def _check_parallel_samples(config) -> None:
  """`radars.devices_per_sample`: RADARS's loop on images, its shared
  programs and fair pool, rows that divide the devices and the batch."""
  per_sample = int(config.radars.devices_per_sample)
  if not per_sample:
    return
  where = f"radars.devices_per_sample={per_sample}"
  if config.method in dnas_lib.DNAS_METHODS or config.task == "agents":
    raise UserError(f"{where} trains the samples of method=radars, rl or random on images "
                    "at the same time; set it to 0 here")
  if not config.radars.shared_programs:
    raise UserError(f"{where} trains the samples on the shared program: set "
                    "radars.shared_programs=True")
  if not config.radars.fair_pool:
    raise UserError(f"{where}: samples trained at the same time all start from the pool as "
                    "the iteration began: set radars.fair_pool=True")
  if jax.process_count() > 1:
    raise UserError(f"{where} trains samples in parallel on one process's devices; a run of "
                    f"{jax.process_count()} processes trains them one after another: set it "
                    "to 0")
  n = jax.device_count()
  if n % per_sample:
    raise UserError(f"{where} does not divide the {n} devices")
  if int(config.data.batch_size) % per_sample:
    raise UserError(f"data.batch_size={config.data.batch_size} is not divisible by {where}")


def _check_radars_budget(config, mode: str) -> None:
  if mode == "search" and config.method == "radars" and config.memory_budget_gb is None:
    raise UserError("method=radars needs a memory budget: set --config.memory_budget_gb=GB "
                    "(left unset, the command line takes a GPU's or TPU's own limit; "
                    "this device reports none)")


def check_performance_options(config) -> None:
  """Every combination check of the performance options (the switches that
  change how a search computes, never what: `supernet.scan_edges`,
  `scan_switched`, `dnas.passes_in_loop`,
  `radars.compile_ahead`, `radars.shared_programs`, `compilation_cache`;
  docs/performance.md, "Performance options"). `scan_switched`,
  `compile_ahead`, `shared_programs` and `compilation_cache` combine with
  everything; the others as below."""
  method, supernet = config.method, config.supernet
  if config.dnas.passes_in_loop and dnas_lib.dnas_mode(config) != "first_order":
    raise UserError(f"dnas.passes_in_loop=True runs the two passes of first-order DARTS; "
                    f"this search's DNAS is {dnas_lib.dnas_mode(config)}")
  if method not in dnas_lib.DNAS_METHODS and supernet.scan_edges:
    # A cell scans only where its edges run the same ops: a sampled
    # subspace's rarely do, so its steps would be per edge anyway.
    raise UserError(
        "supernet.scan_edges scans the cells of whole-space DNAS (method=darts or "
        f"single_darts); method={method} runs subspaces whose edges differ: leave "
        "scan_edges off (its shared programs scan with supernet.scan_switched=True)")
  if supernet.scan_edges:
    space = spaces_lib.space_from_config(config.space)
    ops_lib.check_scannable(space.op_names)


def num_train_examples(data_config) -> int:
  """Examples in the configured training split (after `train_size`), from
  the dataset's known size: nothing is loaded."""
  name, train_size = data_config.name, data_config.train_size
  if name == "synthetic":   # made to size
    return data_lib.SYNTHETIC_DEFAULTS["train_size"] if train_size is None else int(train_size)
  if imagenet.is_streamed(name):
    n = imagenet.DATASETS[name].train_examples
  else:
    n = 50_000 if name in data_lib.CIFAR_NUM_CLASSES else data_lib.DIGITS_NUM_TRAIN
  return n if train_size is None else min(n, int(train_size))


def _check_divisible(batch_size: int, what: str) -> None:
  n = jax.device_count()
  if batch_size % n:
    raise UserError(f"{what}={batch_size} is not divisible by the {n} devices; "
                    f"use a multiple of {n}")


def _check_agents(config, mode: str) -> None:
  """`task=agents`: method a2d or radars, a memory budget and a time limit
  for radars only (a2d searches the whole space), an agent space, PPO's batch cut into
  whole minibatches, a teacher workdir that exists."""
  if config.method not in AGENT_METHODS:
    raise UserError(f"task=agents searches with method=a2d or radars, not "
                    f"method={config.method}")
  if config.method == "a2d" and config.memory_budget_gb is not None:
    raise UserError("method=a2d searches the whole agent space and takes no memory budget: "
                    "leave memory_budget_gb unset")
  if config.method == "a2d" and config.search.max_seconds is not None:
    raise UserError("method=a2d has no time limit (its teacher, search and retraining resume "
                    "after a kill instead): leave search.max_seconds unset")
  _check_radars_budget(config, mode)
  agent_supernet.check_agent_space(
      spaces_lib.space_from_config(config.space))
  a = config.agents
  if a.env not in agent_envs.MINATAR_GAMES:
    raise UserError(f"task=agents searches convolutional torsos for image observations: "
                    f"agents.env={a.env!r} has none; use one of "
                    f"{', '.join(agent_envs.MINATAR_GAMES)}")
  if (a.num_envs * a.num_steps) % a.num_minibatches:
    raise UserError(f"agents.num_envs * agents.num_steps ({a.num_envs * a.num_steps}) must be "
                    f"a multiple of agents.num_minibatches ({a.num_minibatches})")
  if mode == "search" and a.teacher is not None \
      and not os.path.isdir(os.path.expanduser(a.teacher)):
    raise UserError(f"config.agents.teacher={a.teacher!r}: no such directory (the workdir of "
                    "an earlier task=agents run, whose teacher is loaded)")


def _check_search_data(config) -> None:
  """The batch and the holdout against the training split and the devices."""
  d = config.data
  n = num_train_examples(d)
  if not d.holdout_size < n - 2:
    raise UserError(f"data.holdout_size={d.holdout_size} must be between 1 and {n - 3} "
                    f"(the {d.name} training split has {n} examples)")
  rest = n - d.holdout_size
  per_step = rest if dnas_lib.dnas_mode(config) == "single_level" else rest // 2
  if d.batch_size > per_step:
    raise UserError(f"data.batch_size={d.batch_size} is larger than the {per_step} "
                    f"training examples of a search step ({d.name}: {n} training examples, "
                    f"{d.holdout_size} held out)")


def _check_train(config) -> None:
  """`mode=train`: a genotype, and a batch that fits the split and devices."""
  if "train" not in config:
    return   # train.run_training adds the defaults, then checks again
  t = config.train
  n = num_train_examples(config.data)
  if t.batch_size > n:
    raise UserError(f"train.batch_size={t.batch_size} is larger than the {n} "
                    f"training examples of {config.data.name}")
  _check_divisible(int(t.batch_size), "train.batch_size")
  genotypes_lib.load_genotype(config.get("genotype"))   # names the problem, one line


def _check_files(config) -> None:
  """The files and directories the run reads exist."""
  d = config.data
  if d.data_dir is not None and d.name in data_lib.CIFAR_NUM_CLASSES \
      and not d.download and not os.path.isdir(os.path.expanduser(d.data_dir)):
    raise UserError(f"config.data.data_dir={d.data_dir!r}: no such directory (with "
                    f"data.download=False the prepared {d.name} must be there; "
                    "--config.data.archive=PATH prepares it from the downloaded archive)")
  data_lib.archive_path(d.name, d.archive)
  imagenet.manual_dir(d)
  if config.get("genotype") is not None and config.mode in ("describe", "train"):
    genotypes_lib.load_genotype(config.genotype)
  table = config.get("table")
  path = table.path if isinstance(table, ml_collections.ConfigDict) else table
  if path is not None and not os.path.isfile(os.path.expanduser(path)):
    field = "table.path" if isinstance(table, ml_collections.ConfigDict) else "table"
    raise UserError(f"config.{field}={path!r}: no such file (a NAS-Bench-201 CSV with "
                    "an arch_str column)")
  if isinstance(table, ml_collections.ConfigDict):
    methods = tabular_strategies.parse_methods(table.methods)
    transfer = table.get("transfer_path")
    if transfer is None and "ppo_transfer" in methods:
      raise UserError("table.methods has ppo_transfer: set table.transfer_path (the earlier "
                      "task's table) and table.transfer_metric")
    if transfer is not None and not os.path.isfile(os.path.expanduser(transfer)):
      raise UserError(f"config.table.transfer_path={transfer!r}: no such file")
  controller = config.get("controller")
  source = None if controller is None else controller.transfer_from
  if source is not None:
    if config.method not in ("radars", "rl", "random"):
      raise UserError(f"controller.transfer_from carries a controller into method=radars, rl "
                      f"or random, not method={config.method}")
    if not os.path.isfile(os.path.join(os.path.expanduser(source), "config.json")):
      raise UserError(f"config.controller.transfer_from={source!r}: not the workdir of a "
                      "search (no config.json there)")
