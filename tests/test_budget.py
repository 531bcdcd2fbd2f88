"""The memory budget is never exceeded, on the quickstart's own path
(configs/digits.py: RADARS, shared programs, a budget, Single-DARTS),
checked on XLA's bytes of every program that runs.

The budget lies between two subspaces' sizes: the static worst case of one
op per choice point fits, two ops do not; the first iteration's k is sized
too large (the fault), the next ones as the cost model says (k = 1).
- The switched shared program (per edge, as `auto` picks for NB-201
  cells) needs about the same bytes for any k (each slot runs one op),
  fewer than the static worst case of one op: every sample runs on it,
  compiled once per k. (Scanned, it needs more at this tiny size: 492,156 B
  against the static 439,636 B on four devices.)
- Where it is refused (here over `dnas.max_program_ops`, as on
  configs/cifar.py), each sample's own program is compiled, found over the
  budget by XLA and shrunk until it fits, and the controller learns from
  the subspaces that ran.
The final search runs on a static program within the budget.
"""
import functools

import jax
import numpy as np

from configs import digits
from radars_jax import parallel
from radars_jax import performance
from radars_jax import workdir as workdir_lib
from radars_jax.dnas import steps as dnas_steps
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.radars import ppo
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import loop as radars_loop
from radars_jax.radars import programs

from test_program_size import step_ops
from test_radars import tiny_config

K_TOO_LARGE = 2   # ops per choice point the faulty sizing picks first
K_SHRUNK = 3      # ... where samples are shrunk: every sample is over the budget


def quickstart_at_tiny_size():
  """configs/digits.py with tiny data, network and runs (same method,
  budget semantics, DNAS level and program sharing)."""
  config = digits.get_config()
  tiny = tiny_config()
  for field in ("name", "image_size", "train_size", "test_size", "holdout_size",
                "batch_size", "eval_batch_size"):
    config.data[field] = tiny.data[field]
  config.supernet.channels = tiny.supernet.channels
  config.supernet.cells_per_stage = tiny.supernet.cells_per_stage
  config.dnas.epochs = 1
  config.dnas.derived_finetune_steps = 2
  config.radars.subspace_epochs = 1.0
  config.radars.max_iterations = 2
  config.radars.budget_margin = 0.0
  config.controller.samples_per_iteration = 2
  config.progress_bar = False
  return config


@functools.cache
def static_worst_case(k):
  """XLA's bytes and operations of the static train step of the worst case
  of `k` ops per choice point (the k costliest on every edge) of the
  quickstart at tiny size, with the kernels the search picks
  (`radars_jax.performance`); each k compiled once for the file's tests."""
  config = performance.resolve(quickstart_at_tiny_size())[0]
  space = spaces.make_space("nb201")
  image = (config.data.image_size,) * 2 + (3,)
  per_device = config.data.batch_size // len(jax.devices())
  model = cost_lib.trace_cost_model(space, config.supernet, 10, image, per_device)
  sub = space.subspace_from_mask(model.worst_case(np.ones((6, 5), bool), k))
  net = supernet.build_supernet(space, sub, config.supernet, 10)
  program = dnas_steps.DnasProgram(net, "single_level", config.dnas, 10, parallel.make_mesh(),
                                   (0.0,), (1.0,))
  alphas = jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), sub))
  inputs = program.abstract_inputs(supernet.param_shapes(net, image, alphas), alphas,
                                   config.data.batch_size, image)
  compiled = program.compile_train_step(*inputs, bytes_only=True)
  return compiled.bytes, compiled.ops


class Recorded:
  """Everything a search compiled and ran, and what the controller learned
  from, recorded while `radars_loop.run` works."""

  def __init__(self, monkeypatch, first_k: int):
    self.compiled = []   # (CompiledStep, bytes_only) of every compile
    self.ran = []        # (XLA bytes, shared) of every step that ran
    self.updates = []    # the subspaces each controller update learned from
    self.sized = []      # each iteration's k as the cost model sizes it
    compile_step = dnas_steps.DnasProgram.compile_train_step
    update = ppo.controller_update
    subspace_size = programs.Sizing.subspace_size

    def recording(program, state, batch_w, batch_a, bytes_only=False):
      step = compile_step(program, state, batch_w, batch_a, bytes_only)
      self.compiled.append((step, bytes_only))
      run = step.fn

      def counted(*args):
        self.ran.append((step.bytes, bool(step.slots)))
        return run(*args)

      step.fn = counted
      return step

    def recording_update(state, key, ops, *args, **kwargs):
      self.updates.append(np.asarray(ops))
      return update(state, key, ops, *args, **kwargs)

    def faulty_first(sizing, model, alive, largest=None):
      k = subspace_size(sizing, model, alive, largest)
      if largest is None:
        self.sized.append(k)
        return first_k if len(self.sized) == 1 else k
      return k

    monkeypatch.setattr(dnas_steps.DnasProgram, "compile_train_step", recording)
    monkeypatch.setattr(ppo, "controller_update", recording_update)
    monkeypatch.setattr(programs.Sizing, "subspace_size", faulty_first)

  def shared(self):
    return [step for step, _ in self.compiled if step.slots]


def search_under_budget(tmp_path, monkeypatch, first_k: int, max_iterations: int,
                        samples: int, **dnas_fields):
  config = quickstart_at_tiny_size()
  assert config.radars.shared_programs and config.method == "radars"
  assert config.dnas.inner_mode == "single_level"
  space = spaces.make_space("nb201")
  budget, _ = static_worst_case(1)
  config.memory_budget_gb = budget / 1e9
  config.radars.max_iterations = max_iterations
  config.controller.samples_per_iteration = samples
  config.dnas.update(dnas_fields)
  recorded = Recorded(monkeypatch, first_k)
  summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / "run"), space)
  # every step that ran is within the budget, by XLA's own bytes
  assert recorded.ran and max(b for b, _ in recorded.ran) <= budget
  assert summary["over_budget_steps"] == 0 and summary["step_bytes"] <= budget
  assert [r["iteration"] for r in summary["subspace_runs"]][-1] == "final"
  assert len(recorded.updates) == max_iterations
  return summary, recorded, budget


def test_the_shared_program_runs_every_sample_within_the_budget(tmp_path, monkeypatch):
  summary, recorded, budget = search_under_budget(tmp_path, monkeypatch, K_TOO_LARGE,
                                                  max_iterations=2, samples=2)
  assert recorded.sized[1] == 1
  assert [r["program"] for r in summary["subspace_runs"] if r["iteration"] != "final"] == [
      "shared"] * 4
  assert summary["shared_program_runs"] == 4
  # compiled once per k (k = 2, then 1), each within the budget
  assert sorted(step.slots for step in recorded.shared()) == [1, K_TOO_LARGE]
  assert all(step.bytes <= budget for step in recorded.shared())
  assert any(shared for _, shared in recorded.ran)


def test_samples_over_the_budget_are_shrunk_until_they_fit(tmp_path, monkeypatch):
  config = quickstart_at_tiny_size()
  space = spaces.make_space("nb201")
  _, limit = static_worst_case(K_SHRUNK)
  assert step_ops(config) > limit
  # static steps of K_SHRUNK ops compile, the shared program is refused
  summary, recorded, budget = search_under_budget(tmp_path, monkeypatch, K_SHRUNK,
                                                  max_iterations=1, samples=1,
                                                  max_program_ops=limit)
  assert summary["shared_program_runs"] == 0 and not recorded.shared()
  # the samples were compiled over the budget and shrunk
  assert any(step.bytes > budget for step, bytes_only in recorded.compiled if not bytes_only)
  sampled = [r for r in summary["subspace_runs"] if r["iteration"] == 0]
  shrunk = [i for i, r in enumerate(sampled)
            if sum(r["ops_per_choice_point"]) < K_SHRUNK * space.num_choice_points]
  assert shrunk, "no sample was over the budget: the test did not force the shrink path"
  # the controller learned from the subspaces that ran (-1: no op)
  for i in shrunk:
    learned = recorded.updates[0][i]
    assert (learned < 0).any()
    ran_ops = [sorted(a) for a in sampled[i]["subspace"]]
    assert [sorted(o for o in row if o >= 0) for row in learned.tolist()] == ran_ops
