"""The memory budget is never exceeded, on the quickstart's own path
(configs/digits.py: RADARS, shared programs, a budget, Single-DARTS),
checked on XLA's bytes of every program that runs, even when k is sized too
large: the samples over the budget are compiled, refused and shrunk until
they fit, and the controller learns from the subspaces that ran.

(The switched shared program needs fewer bytes than the static worst case
of one op, so under any budget the search accepts it fits; here it is over
`dnas.max_program_ops`, as on `configs/cifar.py`, so that the samples run
on static programs.)"""
import jax
import numpy as np

from configs import digits
from radars_jax import controller as ctrl
from radars_jax import cost_model as cost_lib
from radars_jax import dnas
from radars_jax import loop_programs
from radars_jax import parallel
from radars_jax import radars
from radars_jax import spaces
from radars_jax import supernet
from radars_jax import workdir as workdir_lib

from test_program_size import step_ops
from test_radars import tiny_config

K_TOO_LARGE = 3   # ops per choice point the faulty sizing picks


def quickstart_at_tiny_size():
  """configs/digits.py with tiny data, network and runs (same method,
  budget semantics, DNAS level and program sharing)."""
  config = digits.get_config()
  tiny = tiny_config()
  for field in ("name", "image_size", "train_size", "test_size", "holdout_size",
                "batch_size", "eval_batch_size"):
    config.data[field] = tiny.data[field]
  config.supernet.channels = tiny.supernet.channels
  config.dnas.epochs = 1
  config.dnas.derived_finetune_steps = 2
  config.radars.subspace_epochs = 1.0
  config.radars.max_iterations = 1
  config.radars.budget_margin = 0.0
  config.controller.samples_per_iteration = 2
  config.progress_bar = False
  return config


def worst_cases(config, space, ks):
  """{k: (XLA's bytes, XLA operations)} of the train step of the worst case
  of k ops per choice point (the k costliest on every edge)."""
  image = (config.data.image_size,) * 2 + (3,)
  per_device = config.data.batch_size // len(jax.devices())
  model = cost_lib.trace_cost_model(space, config.supernet, 10, image, per_device)
  out = {}
  for k in ks:
    sub = space.subspace_from_mask(model.worst_case(np.ones((6, 5), bool), k))
    net = supernet.build_supernet(space, sub, config.supernet, 10)
    program = dnas.DnasProgram(net, "single_level", config.dnas, 10, parallel.make_mesh(),
                               (0.0,), (1.0,))
    alphas = jax.eval_shape(lambda sub=sub: supernet.init_alphas(jax.random.key(0), sub))
    inputs = program.abstract_inputs(supernet.param_shapes(net, image, alphas), alphas,
                                     config.data.batch_size, image)
    compiled = program.compile_train_step(*inputs, bytes_only=True)
    out[k] = (compiled.bytes, compiled.ops)
  return out


def test_no_step_over_the_budget_runs_when_k_is_sized_too_large(tmp_path, monkeypatch):
  config = quickstart_at_tiny_size()
  assert config.radars.shared_programs and config.method == "radars"
  assert config.dnas.inner_mode == "single_level"
  space = spaces.make_space("nb201")
  worst = worst_cases(config, space, (1, K_TOO_LARGE))
  # between two subspaces' sizes: one op per edge fits, the worst of three not
  budget = worst[1][0]
  config.memory_budget_gb = budget / 1e9
  config.dnas.max_program_ops = worst[K_TOO_LARGE][1]   # static steps of k ops, not the shared
  assert step_ops(config) > config.dnas.max_program_ops

  programs, ran = [], []   # (XLA bytes, bytes only) of every compile; bytes of every run
  compile_step = dnas.DnasProgram.compile_train_step

  def recording(self, state, batch_w, batch_a, bytes_only=False):
    step = compile_step(self, state, batch_w, batch_a, bytes_only)
    programs.append((step.bytes, bytes_only))
    run = step.fn

    def counted(*args):
      ran.append(step.bytes)
      return run(*args)

    step.fn = counted
    return step

  updates = []   # the subspaces each controller update learned from
  update = ctrl.controller_update

  def recording_update(state, key, ops, *args, **kwargs):
    updates.append(np.asarray(ops))
    return update(state, key, ops, *args, **kwargs)

  # The fault: the cost model's k is too large for the budget.
  monkeypatch.setattr(loop_programs.Sizing, "subspace_size",
                      lambda self, model, alive, largest=None: K_TOO_LARGE)
  monkeypatch.setattr(dnas.DnasProgram, "compile_train_step", recording)
  monkeypatch.setattr(ctrl, "controller_update", recording_update)
  summary = radars.run(config, workdir_lib.prepare(tmp_path / "run"), space)

  assert ran and max(ran) <= budget                       # XLA's bytes of what ran
  assert any(b > budget for b, bytes_only in programs if not bytes_only)   # refused ones
  assert summary["shared_program_runs"] == 0
  assert summary["over_budget_steps"] == 0 and summary["step_bytes"] <= budget
  sampled = [r for r in summary["subspace_runs"] if r["iteration"] == 0]
  shrunk = [i for i, r in enumerate(sampled)
            if sum(r["ops_per_choice_point"]) < K_TOO_LARGE * space.num_choice_points]
  assert shrunk, "no sample was over the budget: the test did not force the shrink path"
  assert len(updates) == 1
  for i in shrunk:   # the controller learned from the shrunk subspace (-1: no op)
    learned = updates[0][i]
    assert (learned < 0).any()
    ran_ops = [sorted(a) for a in sampled[i]["subspace"]]
    assert [sorted(o for o in row if o >= 0) for row in learned.tolist()] == ran_ops
