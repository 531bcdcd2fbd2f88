"""What the RADARS loop (`radars_jax.radars.loop`) searches: a task.

The loop (budget, cost model, controller, pruning, weight pool,
checkpoints) is the same for every task; a task says what a subspace's
network is and how it is trained and scored:
  * `name`, `score_fields`: the dataset or environment, and the fields of a
    subspace's record that score it (besides "reward");
  * `full_pool()`: the weight pool's zero arrays for the whole space;
  * `trace_cost_model()`: the cost model traced on the task's supernet;
  * `build(model, budget)`: the programs each subspace runs on and the
    sizing of its runs (`radars.programs`), once the cost model exists;
  * `search_subspace(...)`: the search inside one subspace, warm-started
    from the pool: its weights and its record's fields; `search_group(...)`
    (image tasks only, `radars.devices_per_sample`): the same for several
    subspaces trained at the same time;
  * `finish(record)`: what the task does with the found architecture, as
    extra fields of summary.json.
`ImageTask` below searches image classifiers with DNAS;
`radars_jax.agents.radars_search.AgentTask` searches deep-RL agents with A2D.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import jax
import numpy as np

from radars_jax import metrics as metrics_lib
from radars_jax.dnas import search as search_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib
from radars_jax.nas import weight_pool as pool_lib
from radars_jax.radars import compile_queue as queue_lib
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import hardware
from radars_jax.radars import programs
from radars_jax.radars.state import PoolView, SearchRecord
from radars_jax.time_limit import NO_LIMIT, TimeLimit


class SearchTask(Protocol):
  """The task-specific half of a RADARS search (see the module's docstring)."""
  name: str
  score_fields: tuple[str, ...]

  def full_pool(self) -> tuple[dict, dict]: ...

  def trace_cost_model(self) -> cost_lib.CostModel: ...

  def build(self, model: cost_lib.CostModel,
            budget: float | None) -> tuple[programs.LoopPrograms, programs.Sizing]: ...

  def search_subspace(self, subspace, key: jax.Array, pool: PoolView, tag: str, compiled,
                      checkpoint, final: bool = False) -> tuple[object, dict]: ...

  def finish(self, record: SearchRecord) -> dict: ...


class ImageTask:
  """Image classifiers on `config.data`: DNAS inside each subspace
  (`radars_jax.dnas.search.Searcher`), scored by the holdout accuracy of
  the derived cell, aimed at `hardware.target` where one is set
  (`radars_jax.radars.hardware`: the reward's factor and the DNAS loss's
  cost term)."""
  score_fields = ("val_accuracy",)

  def __init__(self, config, path: Path, space: spaces_lib.SearchSpace, mesh, writer,
               time_limit: TimeLimit = NO_LIMIT):
    del path   # (images write nothing of their own)
    self.config, self.space, self.mesh, self.writer = config, space, mesh, writer
    self.time_limit = time_limit   # (its DNAS runs stop at a log step past it)
    self.data = search_lib.load_search_data(config.data, mesh)
    self.name = self.data.name
    # set by `build`
    self.searcher: search_lib.Searcher | None = None
    self.sizing: programs.Sizing | None = None
    self.costs: hardware.HardwareCosts | None = None   # (with hardware.target)
    # set by `full_pool`: `op_weight_counts` of the whole space
    self.weight_counts: tuple[int, dict] | None = None

  def full_pool(self) -> tuple[dict, dict]:
    model = supernet_lib.build_supernet(self.space, self.space.full_subspace(),
                                        self.config.supernet, self.data.num_classes)
    pool, trained = zero_pool(model, self.space, self.data.image_shape)
    # (each sample's derived network is then counted, not traced)
    self.weight_counts = op_weight_counts(model, self.space, pool)
    return pool, trained

  def trace_cost_model(self) -> cost_lib.CostModel:
    per_device = int(self.config.data.batch_size) // int(self.mesh.devices.size)
    return traced_with_progress(
        lambda progress: cost_lib.trace_cost_model(
            self.space, self.config.supernet, self.data.num_classes, self.data.image_shape,
            per_device, progress),
        bool(self.config.progress_bar))

  def build(self, model: cost_lib.CostModel,
            budget: float | None) -> tuple[programs.LoopPrograms, programs.Sizing]:
    """The searcher, its programs and the sizing; the cost model orders
    the shared program's slots (`Searcher(slot_orders=...)`)."""
    hw = self.config.hardware
    penalty = None
    if hw.target is not None:
      self.costs = hardware.measure(
          self.space, self.model, self.data.image_shape, hw.metric, int(hw.batch_size))
      low, high = self.costs.range()
      print(f"radars_jax: hardware.target={hw.target:g} ({hw.metric}; the derived networks "
            f"cost {low:.4g} to {high:.4g})", flush=True)
      if float(hw.dnas_weight):
        penalty = hardware.penalty_fn(self.costs, hw)
    self.searcher = search_lib.Searcher(self.config, self.mesh, self.data, self.space,
                                        self.writer, slot_orders=model.slot_orders(),
                                        alpha_penalty=penalty, time_limit=self.time_limit)
    self.sizing = programs.Sizing(self.config, budget, self.searcher.steps_per_epoch())
    loop_programs = programs.LoopPrograms(
        self.config, self.searcher, budget,
        queue_lib.CompileQueue(bool(self.config.radars.compile_ahead)))
    return loop_programs, self.sizing

  def search_subspace(self, subspace, key: jax.Array, pool: PoolView, tag: str, compiled,
                      checkpoint, final: bool = False) -> tuple[object, dict]:
    """DNAS in `subspace` on `compiled` (resumed from and saved to
    `checkpoint`, a Checkpointer), warm-started from `pool`: (its weights,
    its record's fields: the genotype, steps, val_accuracy, and the reward
    of a sample or the alphas of the final search)."""
    radars = self.config.radars
    checkpoint = (checkpoint, int(radars.checkpoint_every_steps))
    if final:
      result = self.searcher.run_dnas(subspace, self.sizing.final_epochs(), key, pool=pool,
                                      tag=tag, compiled=compiled, checkpoint=checkpoint)
      return result.weights, {"genotype": result.genotype, "val_accuracy": result.val_accuracy,
                              "steps": result.steps,
                              "alphas": [a.tolist() for a in result.alphas]}
    result = self.searcher.run_dnas(
        subspace, float(radars.subspace_epochs), key, pool=pool, tag=tag, compiled=compiled,
        checkpoint=checkpoint, finetune_steps=int(radars.sample_finetune_steps))
    return self.scored(result)

  def search_group(self, subspaces, keys, pools, tag: str, compiled,
                   checkpoint) -> list[tuple[object, dict]]:
    """`search_subspace` of each sample of `subspaces` (with its key and
    pool), trained at the same time on a group step
    (`Searcher.run_dnas_group`)."""
    radars = self.config.radars
    results = self.searcher.run_dnas_group(
        subspaces, float(radars.subspace_epochs), keys, pools=pools, tag=tag,
        compiled=compiled, checkpoint=(checkpoint, int(radars.checkpoint_every_steps)),
        finetune_steps=int(radars.sample_finetune_steps))
    return [self.scored(result) for result in results]

  def scored(self, result: search_lib.DnasResult) -> tuple[object, dict]:
    """A sample's DNAS result as (its weights, its record's fields): the
    reward is the holdout accuracy, with `hardware.target` combined with
    the derived network's cost (`hardware.reward`)."""
    params_m = subspace_weight_count(
        self.weight_counts, spaces_lib.genotype_subspace(self.space, result.genotype)) / 1e6
    reward = float(result.val_accuracy)
    fields = {}
    if self.costs is not None:
      hw = self.config.hardware
      cost = self.costs.of(spaces_lib.genotype_subspace(self.space, result.genotype))
      reward = float(hardware.reward(reward, cost, float(hw.target), hw.form, float(hw.weight)))
      fields["hardware_cost"] = cost
    margins = spaces_lib.margin_summary(self.space, result.subspace, result.alphas)
    return result.weights, {"val_accuracy": result.val_accuracy, "reward": reward,
                            "derived_params_millions": params_m, "genotype": result.genotype,
                            "steps": result.steps, **fields,
                            "decision_margin": margins["decision_margin_median"]}

  def model(self, subspace):
    """The search supernet of `subspace` (per edge)."""
    return supernet_lib.build_supernet(self.space, subspace, self.config.supernet,
                                       self.data.num_classes)

  def finish(self, record: SearchRecord) -> dict:
    """With `hardware.target`: the found network's cost by the per-op
    table and measured whole (`hardware.whole_network_cost`: its weights,
    XLA's FLOPs, its timed forward pass), against the target. (The found cell is
    retrained by `mode=train`.)"""
    if self.costs is None:
      return {}
    hw = self.config.hardware
    result = record.final if record.final is not None else record.best
    chosen = spaces_lib.genotype_subspace(self.space, result["genotype"])
    out = {"metric": hw.metric, "target": float(hw.target), "form": hw.form,
           "cost": self.costs.of(chosen), "costs": self.costs.to_json()}
    out["measured"] = hardware.whole_network_cost(self.model(chosen), self.data.image_shape,
                                                  hw.metric, int(hw.batch_size))
    return {"hardware": out}


# ---------------------------------------------------------------------------
# Pieces every task uses
# ---------------------------------------------------------------------------

def traced_with_progress(trace, verbose: bool) -> cost_lib.CostModel:
  """`trace(progress)` (a cost model's trace, `progress(done, total)` after
  each op) with a progress bar."""
  bar = metrics_lib.progress_bar(1, "cost model (tracing ops)", enabled=verbose)

  def progress(done, total):
    bar.total = total
    bar.n = done
    bar.refresh()

  model = trace(progress)
  bar.close()
  return model


def zero_pool(model, space: spaces_lib.SearchSpace, input_shape) -> tuple[dict, dict]:
  """Fixed-structure pool of `model` (a supernet of the whole space): zero
  arrays of every parameter, none of them trained."""
  alphas = jax.eval_shape(lambda: supernet_lib.init_alphas(jax.random.key(0),
                                                           space.full_subspace()))
  shapes = pool_lib.canonical(supernet_lib.param_shapes(model, input_shape, alphas))
  pool = {p: np.zeros(s.shape, np.float32) for p, s in shapes.items()}
  trained = {p: np.asarray(False) for p in shapes}
  return pool, trained


def op_weight_counts(model, space: spaces_lib.SearchSpace,
                     pool: dict) -> tuple[int, dict[tuple[int, int], int]]:
  """(the weights outside every choice point, {(choice point, op): the
  op's weights there}) of `model`, a supernet of the whole space, from its
  pool's arrays (`zero_pool`: per-edge paths)."""
  owners = supernet_lib.param_owners(model, space, pool)
  base, per_op = 0, {}
  for path, array in pool.items():
    if path in owners:
      per_op[owners[path]] = per_op.get(owners[path], 0) + int(array.size)
    else:
      base += int(array.size)
  return base, per_op


def subspace_weight_count(counts: tuple[int, dict], subspace) -> int:
  """The weights of `subspace`'s supernet (a genotype's: its derived
  network), from `op_weight_counts`: nothing traced."""
  base, per_op = counts
  return base + sum(per_op.get((c, o), 0) for c, ops in enumerate(subspace) for o in ops)
