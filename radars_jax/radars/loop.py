"""The RADARS search loop (`method=radars`) and its baselines (`rl`, `random`).

    python -m radars_jax.main --config configs/digits.py --workdir runs/digits

`method=radars`, per iteration:
  1. size k: the largest number of ops per choice point whose worst-case
     subspace fits `memory_budget_gb` (`radars_jax.radars.cost_model`);
  2. the controller (`radars_jax.radars.controller`) samples P subspaces of k alive
     ops per choice point;
  3. each one is searched by DNAS with a compiled train step whose exact
     bytes are within the budget: by default one program for every
     subspace of k ops (`radars.shared_programs`: a switched supernet, see
     `radars_jax.nas.supernet`, compiled once per k, the first one in a
     background thread while the cost model calibrates); where that program does
     not fit the budget, the sample's own static program (a subspace over
     the budget is shrunk first, so no step ever runs over budget; the
     later samples compile in a background thread while the earlier ones
     train, `radars.compile_ahead`). DNAS is warm-started from the weight
     pool and its weights are written back; its reward is the holdout
     accuracy of the architecture derived from it (aimed at
     `hardware.target` where set, `radars_jax.radars.hardware`);
  4. the controller's critic and policy are updated, and ops whose policy
     probability is below `controller.prune_threshold` are pruned (never the
     last op of a choice point).
The loop stops when the whole alive space fits the budget (or after
`radars.max_iterations`, then the alive space is cut to the k most probable
ops per choice point); one final DNAS over it gives the genotype.

`method=rl` is the same controller with k = 1: every sample is a whole
architecture, scored after brief training with shared weights; the best one
found is the result (no pruning, `radars.max_iterations` iterations).
`method=random` samples uniformly and never learns.

Everything is resumable: after every scored sample, the search state (weight
pool, controller and critic with their optimiser states and replay buffer,
alive set, PRNG key) goes to an orbax checkpoint in WORKDIR/checkpoints/search
with the loop position, history and cost model as JSON metadata, and long
DNAS runs checkpoint their own state every `radars.checkpoint_every_steps`
steps. Rerunning the same command continues from there; the result equals
that of an uninterrupted run.

Where the parts are: the loop below (`RadarsSearch.run`: restore, prepare,
`loop` of `iteration`s, `final`, `finish`); what depends on the task (the
data, the networks, the search inside one subspace) in
`radars_jax.radars.tasks` (`ImageTask`; `radars_jax.agents.radars_search.AgentTask`
searches agents with this loop); its state as typed records in
`radars_jax.radars.state`; which train step each subspace runs on, the cost
model's calibration and each iteration's k in `radars_jax.radars.programs`;
the background compiles in `radars_jax.radars.compile_queue`; the summary and
plots in `radars_jax.radars.summary`.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import checkpointing
from radars_jax import compile_clock
from radars_jax import config_check
from radars_jax.radars import controller as ctrl
from radars_jax.radars import ppo
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import knowledge
from radars_jax.radars import programs
from radars_jax.radars import summary as loop_summary
from radars_jax.radars import tasks as tasks_lib
from radars_jax import measurements as measurements_lib
from radars_jax import memory as memory_lib
from radars_jax import metrics as metrics_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax import workdir as workdir_lib
from radars_jax.dnas import search as search_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.errors import UserError
from radars_jax.time_limit import (TimeLimit, TimeLimitReached, Watchdog, seconds_before_stop,
                                   stopped_summary)
from radars_jax.radars.state import (Batch, LoopState, PoolView, SearchRecord, SearchTime,
                                   ops_of, subspace_of)

LOOP_METHODS = ("radars", "rl", "random")


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def run(config, path: Path, space: spaces_lib.SearchSpace,
        make_task=tasks_lib.ImageTask) -> dict:
  """`method=radars|rl|random` of `make_task(config, path, space, mesh,
  writer)` (a `tasks.SearchTask`; image classifiers by default) in workdir
  `path` (resumes if it holds a checkpoint of the same search)."""
  return RadarsSearch(config, path, space, make_task).run()


def run_search(config, workdir: str, make_task=tasks_lib.ImageTask) -> dict:
  """`mode=search` for `method=radars|rl|random`: `run` in `workdir`
  (made, with its config.json, as for every search)."""
  path, space = search_lib.prepare_search(config, workdir)
  return run(config, path, space, make_task)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

# WORKDIR/plots is redrawn after an iteration once this long has passed
# since it was last drawn (a person watching a long search sees it change;
# a short one does not spend seconds per iteration drawing)
PLOT_REFRESH_SECONDS = 60.0


class RadarsSearch:
  """One `method=radars|rl|random` search in a workdir (resumable). What
  depends on the task (the data, the networks, the search inside one
  subspace) is in `self.task` (`radars_jax.radars.tasks`)."""

  def __init__(self, config, path: Path, space: spaces_lib.SearchSpace,
               make_task=tasks_lib.ImageTask):
    config_check.check_config(config)
    config, self.performance_options = performance.start_run(config)
    self.config, self.path, self.space = config, path, space
    self.method = config.method
    self.time = SearchTime(compile_clock.CompileClock(), time.perf_counter())
    self.limit = TimeLimit(config.search.max_seconds, self.time.elapsed)
    self.mesh = parallel.make_mesh()
    self.writer = metrics_lib.MetricWriter(path / "tensorboard", path / "metrics.jsonl")
    self.budget = search_lib.budget_bytes(config)
    self.running_bytes = 0   # the largest train step this process has run
    self.hparams = ctrl.ControllerHParams.from_config(config.controller)
    self.num_samples = int(config.controller.samples_per_iteration)
    self.ckpt = checkpointing.Checkpointer(path / "checkpoints" / "search", max_to_keep=2)
    self.dnas_ckpt_root = path / "checkpoints" / "dnas"
    self.verbose = bool(config.progress_bar)
    self.plots_refreshed_at = time.monotonic()
    # the cost model and its calibration, kept for reruns of this search
    self.measurements = measurements_lib.Measurements.for_config(config)
    self.measured_inputs = {"config": measurements_lib.config_key(config),
                            "mesh": dict(self.mesh.shape)}
    self.task: tasks_lib.SearchTask = make_task(config, path, space, self.mesh, self.writer,
                                                time_limit=self.limit)
    # Built by `prepare`, once the cost model exists.
    self.programs: programs.LoopPrograms | None = None
    self.sizing: programs.Sizing | None = None

  # -- state -------------------------------------------------------------
  def restore(self) -> tuple[LoopState, SearchRecord]:
    """The latest checkpoint's state and record, else a fresh search's."""
    state = fresh_state(self.space, self.config, *self.task.full_pool())
    record = SearchRecord()
    restored = self.ckpt.restore_latest(state.tree())
    if restored is not None:
      _, tree, meta = restored
      state, record = LoopState.from_tree(tree), SearchRecord.from_json(meta)
      # (a run its time limit stopped counted on past its last checkpoint)
      record.elapsed_seconds = max(record.elapsed_seconds, seconds_before_stop(self.path))
      self.time.resume_from(record)
      print(f"radars_jax: resuming {self.method} search at iteration {record.iteration}, "
            f"sample {record.sample} from {self.ckpt.directory}", flush=True)
    elif self.config.controller.transfer_from is not None:
      state = with_transferred_knowledge(state, self.space, self.config.controller)
    return state, record

  def save(self, step: int, state: LoopState, record: SearchRecord) -> None:
    self.ckpt.save(step, state.tree(), self.time.stamped(record).to_json())
    self.ckpt.wait()

  def prepare(self, record: SearchRecord, alive) -> cost_lib.CostModel:
    """The cost model (traced and calibrated, or the checkpoint's), and the
    task's programs and sizing; refuses a budget one op per choice point
    does not fit."""
    fresh = record.cost_model is None
    if fresh:   # (traced, or as a run of the same search traced it)
      traced, _ = self.measurements.get(
          "cost_model", self.measured_inputs, lambda: self.task.trace_cost_model().to_json())
      model = cost_lib.CostModel.from_json(traced, self.space)
    else:
      model = cost_lib.CostModel.from_json(record.cost_model, self.space)
    self.programs, self.sizing = self.task.build(model, self.budget)
    if fresh:
      programs.calibrate(self.programs, self.sizing, model, alive, record,
                         self.measurements, self.measured_inputs)
    record.cost_model = model.to_json()
    if self.budget is not None and model.largest_k(alive, self.budget) < 1:
      one = model.estimate(model.worst_case(alive, 1))
      raise UserError(f"one op per choice point needs about {memory_lib.format_gb(one)} per "
                      f"step, budget {memory_lib.format_gb(self.budget)}: raise "
                      "memory_budget_gb or make the supernet smaller")
    return model

  # -- the whole search ------------------------------------------------------
  def run(self) -> dict:
    try:
      with self.time.clock:
        state, record = self.restore()
        try:
          with Watchdog(self.limit, self.config.search.overrun_seconds,
                        lambda reason: self.stopped_summary(record, reason), self.path):
            model = self.prepare(record, state.alive)
            state = self.loop(state, record, model)
            if record.phase == "final":
              self.final(state, record, model)
        except TimeLimitReached as stop:
          return self.stopped(record, str(stop))
        return self.finish(state, record, model)
    finally:
      if self.programs is not None:
        self.programs.close()

  def loop(self, state: LoopState, record: SearchRecord, model) -> LoopState:
    """The iterations, until the alive space fits the budget (radars) or
    `radars.max_iterations`; each ends with a checkpoint (and the plots,
    at most once every PLOT_REFRESH_SECONDS)."""
    max_iterations = int(self.config.radars.max_iterations)
    bar = metrics_lib.progress_bar(max_iterations, f"{self.method} iterations",
                                   initial=record.iteration, enabled=self.verbose)
    while record.phase == "loop":
      it = record.iteration
      self.limit.check(f"before iteration {it}")
      k = self.sizing.subspace_size(model, state.alive)
      if self.method == "radars" and (it >= max_iterations
                                      or self.sizing.alive_fits(model, state.alive)):
        record.phase = "final"
        break
      if self.method != "radars" and it >= max_iterations:
        record.phase = "done"
        break
      if record.batch is None:
        record.batch, record.sample = (
            sample_batch(state, it, k, self.method, self.num_samples), 0)
      batch = record.batch
      state = self.iteration(state, record, model)
      if self.method == "radars" and (it + 1 >= max_iterations
                                      or self.sizing.alive_fits(model, state.alive)):
        # the last iteration: the final search's step compiles while this
        # one's checkpoint is written
        self.programs.queue_static([final_subspace(self.sizing, self.space, state, model)],
                                   self.sizing.final_steps())
      record.iteration, record.batch, record.sample = it + 1, None, 0
      self.save((it + 1) * (self.num_samples + 1), state, record)
      bar.update(1)
      bar.set_postfix(best=f"{record.best['reward']:.3f}", k=batch.k,
                      alive=int(state.alive.sum()))
      self.write_plots(record)
    bar.close()
    return state

  def iteration(self, state: LoopState, record: SearchRecord, model) -> LoopState:
    """One iteration's samples (from `record.sample` on): each compiled,
    trained, rewarded and checkpointed; then the controller update and
    pruning. Returns the state after them."""
    batch, it, steps = record.batch, record.iteration, self.sizing.run_steps()
    if self.programs.shared_step(batch.k, steps, record, model) is None:
      self.programs.queue_static(
          [batch.subspace(i) for i in range(record.sample, len(batch.ops))
           if programs.predicted_too_large(
               self.config, model, self.space.mask_from_subspace(batch.subspace(i))) is None],
          steps)
    if self.method != "random":
      self.programs.queue_controller_update(state.controller, self.num_samples,
                                            batch.ops.shape[-1], self.hparams)
    group = self.programs.group_step(batch.k, steps, record, model)
    while record.sample < len(batch.ops):
      self.limit.check(f"before sample {record.sample} of iteration {it}")
      if group is not None:
        indices = list(range(record.sample, min(record.sample + group.samples, len(batch.ops))))
        tag, runs = self.run_group(state, record, it, indices, model, group)
      else:
        indices = [record.sample]
        tag = f"it{it}_s{record.sample}"
        runs = [self.run_sample(state, record, it, record.sample,
                                batch.subspace(record.sample), model, batch.k)]
      for run in runs:
        batch.records.append(run)
        if record.best is None or run["reward"] > record.best["reward"]:
          record.best = run
        record.runs.append(dict(run))
      record.sample = indices[-1] + 1
      record.cost_model = model.to_json()
      self.save(it * (self.num_samples + 1) + record.sample, state, record)
      shutil.rmtree(self.dnas_ckpt_root / tag, ignore_errors=True)
    self.programs.queue.forget("static")   # (a batch's steps are not needed after it)
    state.merge_pending()
    state, probs, metrics = update_controller(state, batch, it, self.method, self.hparams,
                                              float(self.config.controller.prune_threshold))
    log_iteration(self.writer, self.method, state, record, batch, probs, metrics,
                  self.time.elapsed())
    return state

  # -- one sample ------------------------------------------------------------
  def run_sample(self, state: LoopState, record: SearchRecord, iteration: int, index: int,
                 subspace, model, k: int) -> dict:
    """DNAS in one sampled subspace (of at most `k` ops per choice point),
    resumable mid-run; returns its run record."""
    tag = f"it{iteration}_s{index}"
    subspace, compiled, estimate = self.programs.fit_budget(
        subspace, model, record, k, self.sizing.run_steps(), what=f"static step, sample {tag}")
    note_first_train_step(record, self.time)
    self.running_bytes = max(self.running_bytes, compiled.bytes)
    pool = PoolView(state, bool(self.config.radars.pool_similarity))
    with checkpointing.Checkpointer(self.dnas_ckpt_root / tag, max_to_keep=2) as dnas_ckpt:
      weights, fields = self.task.search_subspace(
          subspace, sample_key(state, iteration, index), pool, f"{self.method} {tag}",
          compiled, dnas_ckpt)
    pool.write_back(weights)
    return run_record(self.space, iteration, index, subspace, compiled, estimate, fields, pool)

  def run_group(self, state: LoopState, record: SearchRecord, iteration: int, indices: list,
                model, compiled) -> tuple[str, list[dict]]:
    """DNAS in the samples `indices` of the iteration's batch at the same
    time, on the group step `compiled` (`programs.LoopPrograms.group_step`;
    the fair pool: each starts from the pool as the iteration began, their
    weights are written back in sample order); resumable mid-run. Returns
    (its DNAS checkpoints' tag, their run records)."""
    tag = f"it{iteration}_s{indices[0]}-{indices[-1]}"
    subspaces = [record.batch.subspace(i) for i in indices]
    note_first_train_step(record, self.time)
    self.running_bytes = max(self.running_bytes, compiled.bytes)
    pools = [PoolView(state, bool(self.config.radars.pool_similarity)) for _ in indices]
    with checkpointing.Checkpointer(self.dnas_ckpt_root / tag, max_to_keep=2) as dnas_ckpt:
      results = self.task.search_group(subspaces, [sample_key(state, iteration, i)
                                                   for i in indices],
                                       pools, f"{self.method} {tag}", compiled, dnas_ckpt)
    runs = []
    for index, subspace, pool, (weights, fields) in zip(indices, subspaces, pools, results):
      pool.write_back(weights)
      estimate = model.estimate(self.space.mask_from_subspace(subspace))
      runs.append(run_record(self.space, iteration, index, subspace, compiled, estimate, fields,
                             pool))
    return tag, runs

  # -- the end -------------------------------------------------------------
  def final(self, state: LoopState, record: SearchRecord, model) -> None:
    """One DNAS over `final_subspace` (its step compiled ahead if the last
    iteration queued it)."""
    subspace, compiled, estimate = self.programs.fit_budget(
        final_subspace(self.sizing, self.space, state, model), model, record, 0,
        self.sizing.final_steps(),
        what="static step, final search")
    key = jax.random.fold_in(state.key, 999_999)
    self.running_bytes = max(self.running_bytes, compiled.bytes)
    pool = PoolView(state, bool(self.config.radars.pool_similarity))
    with checkpointing.Checkpointer(self.dnas_ckpt_root / "final", max_to_keep=2) as dnas_ckpt:
      _, fields = self.task.search_subspace(subspace, key, pool, f"{self.method} final", compiled,
                                       dnas_ckpt, final=True)
    record.final = {"subspace": [list(a) for a in subspace], "estimated_bytes": estimate,
                    "compiled_bytes": compiled.bytes, **fields}
    record.runs.append({"iteration": "final", "program": "static",
                        "subspace": [list(a) for a in subspace],
                        "estimated_bytes": estimate, "compiled_bytes": compiled.bytes,
                        **{name: fields[name] for name in self.task.score_fields}})
    record.phase = "done"
    self.save((record.iteration + 1) * (self.num_samples + 1), state, record)

  def stopped(self, record: SearchRecord, reason: str) -> dict:
    """Writes and returns the summary of a search its time limit stopped
    (its checkpoints stay: a rerun goes on from them)."""
    self.writer.close()
    self.ckpt.close()
    return self.stopped_summary(record, reason)

  def stopped_summary(self, record: SearchRecord, reason: str) -> dict:
    """`stopped`'s summary and history, written (also by the `Watchdog`,
    from its thread, while the search is inside a compile or a step)."""
    runs = [r for r in record.runs if r.get("compiled_bytes")]
    # (the run it stopped in is not in `record.runs`, but its steps ran)
    ran = max([r["compiled_bytes"] for r in runs] + [self.running_bytes])
    summary = stopped_summary(
        self.config, self.space.name, self.task.name, self.time.elapsed(), reason,
        iterations_done=record.iteration, subspace_runs=record.runs, best_sample=record.best,
        step_bytes=int(ran),
        memory_budget_bytes=self.budget)
    workdir_lib.write_json(self.path / "history.json", {"iterations": record.history})
    workdir_lib.write_json(self.path / "summary.json", summary)
    return summary

  def write_plots(self, record: SearchRecord) -> None:
    """After an iteration: WORKDIR/plots refreshed, at most once every
    PLOT_REFRESH_SECONDS (drawing them takes seconds: in a short search
    it would be a large part of its time)."""
    if time.monotonic() - self.plots_refreshed_at >= PLOT_REFRESH_SECONDS:
      loop_summary.write_plots(self.path, record.history, self.space, self.budget)
      self.plots_refreshed_at = time.monotonic()

  def finish(self, state: LoopState, record: SearchRecord, model) -> dict:
    """Writes genotype.json, history.json, summary.json, the report and
    the plots (the report's, drawn once); returns the summary."""
    summary = {**loop_summary.summary(self, state, record, model),
               **self.task.finish(record)}
    self.writer.close()
    loop_summary.write_outputs(self.path, summary, record.history)
    self.ckpt.close()
    loop_summary.write_report(self.path)
    loop_summary.copy_report_plots(self.path, record.history, self.space, self.budget)
    return summary


# ---------------------------------------------------------------------------
# The controller's step
# ---------------------------------------------------------------------------

def update_controller(state: LoopState, batch: Batch, iteration: int, method: str,
                      hparams: ctrl.ControllerHParams,
                      prune_threshold: float) -> tuple[LoopState, np.ndarray, dict]:
  """The controller learns from the batch's rewards (not `random`), and
  `radars` prunes the ops whose policy probability is under
  `prune_threshold`. Returns the new state, the updated policy's
  probabilities (over the ops alive before pruning) and the update's
  metrics."""
  rewards = np.array([r["reward"] for r in batch.records], np.float32)
  ops = batch.ops
  # A subspace shrunk to fit the budget is what was run: learn from that.
  run_ops = np.stack([ops_of(tuple(tuple(a) for a in r["subspace"]), ops.shape[-1])
                      for r in batch.records])
  alive = np.asarray(state.alive, bool)
  controller, metrics = state.controller, {}
  if method != "random":
    new_logp = np.asarray(ctrl.log_prob_per_point(controller.logits, alive, run_ops))
    same = np.all(np.sort(np.where(ops < 0, 1 << 20, ops), -1)
                  == np.sort(np.where(run_ops < 0, 1 << 20, run_ops), -1), axis=(1, 2))
    logp = np.where(same[:, None], batch.logp, new_logp)
    # Where nothing was shrunk, learn from the draw order the behaviour
    # log-probabilities belong to (Plackett-Luce depends on it).
    run_ops = np.where(same[:, None, None], ops, run_ops)
    key = jax.random.fold_in(jax.random.fold_in(state.key, iteration), 10_000)
    controller, m = ppo.controller_update(controller, key, run_ops, logp, rewards, alive,
                                           hparams)
    metrics = {name: float(v) for name, v in jax.device_get(m).items()}
  state = dataclasses.replace(state, controller=controller)
  probs = np.asarray(ctrl.policy_probabilities(controller, alive))
  if method == "radars":
    state = dataclasses.replace(state, alive=np.asarray(ctrl.prune(state.alive, probs,
                                                                   prune_threshold)))
  return state, probs, metrics


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def fresh_state(space: spaces_lib.SearchSpace, config, pool: dict,
                trained: dict) -> LoopState:
  """A new search's state: the (untrained) weight pool (and with
  `radars.fair_pool` its pending half), a fresh controller, every op alive."""
  key = jax.random.key(int(config.seed))
  controller = ctrl.init_controller(jax.random.fold_in(key, 1), space.num_choice_points,
                                    space.max_ops, config.controller)
  alive = np.zeros((space.num_choice_points, space.max_ops), bool)
  for c, cp in enumerate(space.choice_points):
    alive[c, :len(cp.ops)] = True
  pending = pending_trained = None
  if config.radars.fair_pool:
    pending = {path: np.zeros_like(value) for path, value in pool.items()}
    pending_trained = {path: np.asarray(False) for path in pool}
  return LoopState(pool, trained, controller, alive, key, pending, pending_trained)


def with_transferred_knowledge(state: LoopState, space: spaces_lib.SearchSpace,
                               controller_config) -> LoopState:
  """A fresh `state` whose controller starts from the search in
  `controller_config.transfer_from` (`radars_jax.radars.knowledge`)."""
  source = knowledge.load_source(controller_config.transfer_from)
  names = knowledge.space_names(space)
  controller = knowledge.carry(source, state.controller, names,
                               bool(controller_config.transfer_policy))
  shared = len(knowledge.matches(source.names, names))
  print(f"radars_jax: the controller starts from {controller_config.transfer_from}'s critic"
        f"{' and policy' if controller_config.transfer_policy else ''} ({shared} of "
        f"{sum(len(ops) for _, ops in names)} ops known there)", flush=True)
  return dataclasses.replace(state, controller=controller)


def note_first_train_step(record: SearchRecord, clock: SearchTime) -> None:
  """Notes the search's start-up time (cost model, calibration, the first
  program) before its first train step."""
  if record.first_train_step_seconds is None:
    record.first_train_step_seconds = clock.elapsed()


def run_record(space: spaces_lib.SearchSpace, iteration: int, index: int, subspace, compiled,
               estimate: float, fields: dict, pool: PoolView) -> dict:
  """The record of sample `index` of `iteration`, searched on `compiled`
  with `pool`; `fields`: the task's."""
  return {"iteration": iteration, "sample": index,
          "subspace": [list(a) for a in subspace],
          "ops_per_choice_point": [len(a) for a in subspace],
          "estimated_bytes": estimate, "compiled_bytes": compiled.bytes,
          "program": "shared" if compiled.slots else "static",
          # samples trained at once with this one (`radars.devices_per_sample`)
          "parallel_samples": compiled.samples or 1,
          # every op dead (e.g. an NB201 cell whose output node gets only
          # `none`): XLA removes the cell, the estimate is an upper bound
          "degenerate": not cost_lib.live_ops(space,
                                              space.mask_from_subspace(subspace)).any(),
          **fields, "pool_hits": pool.hits, "pool_misses": pool.misses,
          # weights the pool lacked, inherited from similar ones, by kind
          "pool_inherited": dict(pool.inherited)}


def sample_key(state: LoopState, iteration: int, index: int) -> jax.Array:
  """The PRNG key of sample `index` of `iteration`'s DNAS run."""
  return jax.random.fold_in(jax.random.fold_in(state.key, iteration), index + 1)


def sample_batch(state: LoopState, iteration: int, k: int, method: str,
                 num_samples: int) -> Batch:
  """The iteration's `num_samples` subspaces of `k` ops per choice point,
  from the controller (uniform for `method=random`)."""
  key = jax.random.fold_in(jax.random.fold_in(state.key, iteration), 0)
  # (host arrays: the logits of a fresh controller and of an updated one
  # are placed differently, and would each compile the sampler)
  logits = np.asarray(state.controller.logits)
  if method == "random":
    logits = np.zeros_like(logits)
  ops, logp = ctrl.sample_subspaces(key, logits, np.asarray(state.alive), k, num_samples,
                                    per_choice_point=True)
  return Batch(np.asarray(ops, np.int32), np.asarray(logp, np.float32), int(k))


def final_subspace(sizing: programs.Sizing, space: spaces_lib.SearchSpace,
                   state: LoopState, model) -> spaces_lib.Subspace:
  """The alive space, cut to the k most probable ops per choice point if
  it does not fit the budget."""
  alive = state.alive
  if not sizing.alive_fits(model, alive):
    k = sizing.subspace_size(model, alive)
    top = np.asarray(ctrl.most_likely_subspace(state.controller.logits, jnp.asarray(alive), k))
    alive = space.mask_from_subspace(subspace_of(top))
  return space.subspace_from_mask(alive)


def log_iteration(writer: metrics_lib.MetricWriter, method: str, state: LoopState,
                  record: SearchRecord, batch: Batch, probs: np.ndarray, metrics: dict,
                  elapsed: float) -> None:
  """The iteration's entry in `record.history` (`probs`: the updated
  policy's, before pruning; `elapsed`: the search's seconds so far), and its
  scalars and histograms in `writer`."""
  rewards = np.array([r["reward"] for r in batch.records], np.float32)
  entry = {
      "iteration": record.iteration, "k": int(batch.k), "rewards": rewards.tolist(),
      "best_reward": float(record.best["reward"]),
      "alive": state.alive.tolist(), "policy_probs": probs.tolist(),
      "alive_ops": int(state.alive.sum()),
      "step_bytes": int(max(r["compiled_bytes"] for r in batch.records)),
      "estimated_bytes": float(max(r["estimated_bytes"] for r in batch.records)),
      "elapsed_seconds": elapsed}
  entry.update({n: metrics[n] for n in ("entropy", "critic_mean", "critic_spread",
                                        "confidence", "advantage_mean", "critic_loss")
                if n in metrics})
  record.history.append(entry)
  scalars = {"reward_mean": float(rewards.mean()), "reward_max": float(rewards.max()),
             "best_reward": entry["best_reward"], "k": entry["k"],
             "alive_ops": entry["alive_ops"], "step_bytes": entry["step_bytes"],
             "estimated_bytes": entry["estimated_bytes"]}
  scalars.update({n: v for n, v in metrics.items()})
  writer.scalars(record.iteration, scalars, prefix=f"{method}/")
  writer.histogram(record.iteration, f"{method}/alive_per_choice_point", state.alive.sum(-1))
  writer.histogram(record.iteration, f"{method}/rewards", rewards)
  writer.flush()
