"""`dnas.max_program_ops`: a train step with more XLA operations than the
limit is refused before XLA compiles it, and the RADARS loop falls back to
smaller programs (static ones instead of the shared one, k = 1, subspaces
shrunk) instead of compiling it; programs predicted over the limit are not
even traced."""
import copy

import jax
import numpy as np
import pytest

from radars_jax.radars import cost_model as cost_lib
from radars_jax.dnas import steps as dnas_steps
from radars_jax import parallel
from radars_jax import performance
from radars_jax.radars import loop as radars_loop
from radars_jax.dnas import search
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError

from test_radars import tiny_config, whole_space_step_bytes

IMAGE = (8, 8, 3)


def step_ops(config, subspace=None, mode="single_level") -> int:
  """XLA operations of the train step of `subspace` (None: the shared,
  switched program of 2 slots), read from the refusal of a limit of 1."""
  space = spaces.make_space(config.space.name)
  mesh = parallel.make_mesh()
  config = performance.resolve(config)[0]   # (as the searches run it)
  dcfg = copy.deepcopy(config.dnas)
  dcfg.max_program_ops = 1
  if subspace is None:
    model = supernet.build_supernet(space, None, config.supernet, 10, switched=True)
    program = dnas_steps.DnasProgram(model, mode, dcfg, 10, mesh, (0.0,), (1.0,))
    c = space.num_choice_points
    inputs = program.abstract_inputs(
        supernet.param_shapes(model, IMAGE),
        tuple(jax.ShapeDtypeStruct((2,), np.float32) for _ in range(c)),
        int(config.data.batch_size), IMAGE, jax.ShapeDtypeStruct((c, 2), np.int32))
  else:
    model = supernet.build_supernet(space, subspace, config.supernet, 10)
    program = dnas_steps.DnasProgram(model, mode, dcfg, 10, mesh, (0.0,), (1.0,))
    alphas = jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), subspace))
    inputs = program.abstract_inputs(supernet.param_shapes(model, IMAGE, alphas), alphas,
                                     int(config.data.batch_size), IMAGE)
  with pytest.raises(dnas_steps.ProgramTooLarge) as refused:
    program.compile_train_step(*inputs)
  return refused.value.ops


def test_a_step_over_the_limit_is_refused_before_xla_compiles_it(monkeypatch):
  config = tiny_config("single_darts")
  space = spaces.make_space("nb201")
  subspace = ((3,), (2,), (3,), (1,), (4,), (3,))
  ops = step_ops(config, subspace)
  assert ops > 1000   # a whole network's forward and backward pass

  def no_compile(*args, **kwargs):
    raise AssertionError("XLA compiled a refused program")

  mesh = parallel.make_mesh()
  model = supernet.build_supernet(space, subspace, config.supernet, 10)
  alphas = jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), subspace))
  weights = supernet.param_shapes(model, IMAGE, alphas)
  config.dnas.max_program_ops = ops - 1
  program = dnas_steps.DnasProgram(model, "single_level", config.dnas, 10, mesh, (0.0,), (1.0,))
  inputs = program.abstract_inputs(weights, alphas, 16, IMAGE)
  with monkeypatch.context() as patch:
    patch.setattr(jax.stages.Lowered, "compile", no_compile)
    with pytest.raises(dnas_steps.ProgramTooLarge) as refused:
      program.compile_train_step(*inputs)
  assert isinstance(refused.value, UserError)   # one line on stderr, exit 2 from main
  assert refused.value.ops == ops and f"{ops:,}" in str(refused.value)
  assert "dnas.max_program_ops" in str(refused.value) and "\n" not in str(refused.value)
  config.dnas.max_program_ops = ops   # at the limit: compiled, its size recorded
  program = dnas_steps.DnasProgram(model, "single_level", config.dnas, 10, mesh, (0.0,), (1.0,))
  compiled = program.compile_train_step(*inputs, bytes_only=True)
  assert compiled.ops == ops and compiled.bytes > 0


def test_whole_space_dnas_too_large_is_refused_and_described(tmp_path):
  config = tiny_config("single_darts")
  full = step_ops(config, spaces.make_space("nb201").full_subspace())
  config.dnas.max_program_ops = full - 1
  info = search.describe(config)
  assert info["full_space_step_bytes"] is None and info["full_space_step_ops"] == full
  assert info["fits_budget"] is None and "max_program_ops" in info["full_space_step"]
  with pytest.raises(dnas_steps.ProgramTooLarge):
    search.run_search(config, workdir_lib.prepare(tmp_path / "run"))


def test_radars_compiles_no_program_over_the_limit(tmp_path, monkeypatch):
  """A limit under the shared program and the worst case of two ops, over
  the worst case of one: the first compile calibrates the prediction of
  program sizes, the worst case of two ops is then predicted over the limit
  and never traced (k = 1: no calibration point, no sample of two ops), the
  shared program is lowered at most once, refused, and every sample runs on
  its own program; no compiled step is over the limit."""
  config = tiny_config()
  config.radars.shared_programs = True
  # per edge, the shared program is larger than the worst case of two ops
  # (scanned, it is not: it would fit the limit below)
  config.supernet.scan_switched = False
  config.radars.max_iterations = 1
  config.controller.samples_per_iteration = 2
  space = spaces.make_space("nb201")
  model = cost_lib.trace_cost_model(space, performance.resolve(config)[0].supernet, 10, IMAGE,
                                    config.data.batch_size // len(jax.devices()))
  alive = space.mask_from_subspace(space.full_subspace())
  masks = {k: model.worst_case(alive, k) for k in (1, 2)}
  worst = {k: step_ops(config, space.subspace_from_mask(masks[k])) for k in (1, 2)}
  shared = step_ops(config)
  assert worst[1] < worst[2] < shared
  # one program's size predicts another's (within 10%)
  model.add_point(masks[1], 0.0, worst[1])
  assert model.program_ops(masks[2]) == pytest.approx(worst[2], rel=0.10)
  limit = (worst[1] + worst[2]) // 2
  config.dnas.max_program_ops = limit
  full_bytes = whole_space_step_bytes()
  config.memory_budget_gb = 0.9 * full_bytes / 1e9   # the whole space does not fit
  config.radars.budget_margin = 0.0
  lowered_sizes = []
  counted = dnas_steps.program_ops

  def counting(lowered):
    lowered_sizes.append(counted(lowered))
    return lowered_sizes[-1]

  monkeypatch.setattr(dnas_steps, "program_ops", counting)
  summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / "run"), space)
  whats = [c["what"] for c in summary["compiles"]]
  assert [w for w in whats if w.startswith("calibration")] == [
      "calibration, worst case of 1 op (bytes only)"]
  assert not any(w.startswith("shared step") for w in whats)
  assert sum(1 for ops in lowered_sizes if ops > limit) <= 1   # the shared program
  assert summary["shared_program_runs"] == 0 and summary["static_program_runs"] >= 3
  assert all(0 < c["ops"] <= limit for c in summary["compiles"])
  sampled = [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  assert len(sampled) == 2 and all(r["program"] == "static" for r in sampled)
  assert all(max(r["ops_per_choice_point"]) == 1 for r in sampled)
  final = summary["subspace"]
  assert sum(len(a) for a in final) < sum(len(a) for a in space.full_subspace())
  assert summary["genotype"] and 0.0 <= summary["val_accuracy"] <= 1.0
