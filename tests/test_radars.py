"""The RADARS loop on tiny synthetic data: the memory cost model, sizing k
to the budget, pruning, never a step over budget, resume after a crash equal
to an uninterrupted run (the baselines and budget refusals: test_baselines.py)."""
import copy
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from radars_jax import checkpointing
from radars_jax import main
from radars_jax import time_limit
from radars_jax import compile_clock
from radars_jax import config_defaults
from radars_jax.radars import cost_model as cost_lib
from radars_jax.dnas import steps as dnas_steps
from radars_jax.radars import programs
from radars_jax.radars import tasks as tasks_lib
from radars_jax import parallel
from radars_jax import performance
from radars_jax.radars import loop as radars_loop
from radars_jax.dnas import search
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax import workdir as workdir_lib

def tiny_config(method="radars"):
  config = config_defaults.base_config()
  config.method = method
  config.progress_bar = False
  config.data.name = "synthetic"
  config.data.image_size = 8
  config.data.train_size = 96
  config.data.test_size = 16
  config.data.holdout_size = 32
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.space.name = "nb201"
  config.supernet.channels = 4
  config.supernet.cells_per_stage = 1
  config.dnas.epochs = 1
  config.radars.subspace_epochs = 1.0
  config.radars.max_iterations = 2
  config.radars.checkpoint_every_steps = 2
  config.controller.samples_per_iteration = 2
  config.controller.critic_steps = 10
  config.controller.prune_threshold = 0.19   # uniform is 0.2: the first update prunes
  config.radars.shared_programs = False       # (a test below turns them on)
  return config


def whole_space_step_bytes(config=None) -> int:
  """Compiled bytes of the whole-space step of `config` (default
  `tiny_config()`) as the subspace searches compile steps (`xla` kernels,
  one mixed op per edge: what their cost model adds up; `auto` picks
  others for whole-space DNAS on the CPU)."""
  config = copy.deepcopy(config or tiny_config())
  config.method = "single_darts"
  config.supernet.update(depthwise_impl="xla", scan_edges=False)
  return search.describe(config)["full_space_step_bytes"]


@pytest.fixture(scope="module")
def full_step_bytes():
  return whole_space_step_bytes()


def budgeted(full_bytes, method="radars"):
  config = tiny_config(method)
  config.memory_budget_gb = 0.9 * full_bytes / 1e9   # the full space does not fit
  config.radars.budget_margin = 0.0
  return config


def test_cost_model_estimates_within_ten_percent_of_compiled_bytes():
  """Calibrated on two compiles (worst cases at k = 1, 2), the estimate of
  other subspaces is within 10% of XLA's compiled figure (with the
  kernels the subspace searches pick, `radars_jax.performance`)."""
  config = performance.resolve(tiny_config())[0]
  config.supernet.channels = 8
  config.data.batch_size = 64
  space = spaces.make_space("nb201")
  per_device = 64 // len(jax.devices())
  model = cost_lib.trace_cost_model(space, config.supernet, 10, (8, 8, 3), per_device)
  # "none" is (almost) free, a 3x3 convolution costs more than a 1x1 one.
  assert model.per_op[0, 0] < 0.01 * model.per_op[0, 2]
  assert model.per_op[0, 3] > model.per_op[0, 2] > 0
  mesh = parallel.make_mesh()

  def compiled_bytes(mask):
    sub = space.subspace_from_mask(mask)
    net = supernet.build_supernet(space, sub, config.supernet, 10)
    program = dnas_steps.DnasProgram(net, "single_level", config.dnas, 10, mesh, (0.0,), (1.0,))
    alphas = jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), sub))
    weights = supernet.param_shapes(net, (8, 8, 3), alphas)
    return program.compile_train_step(   # (read, never run: `bytes_only`)
        *program.abstract_inputs(weights, alphas, 64, (8, 8, 3)), bytes_only=True).bytes

  alive = np.ones((6, 5), bool)
  for k in (1, 2):
    worst = model.worst_case(alive, k)
    np.testing.assert_array_equal(worst.sum(-1), k)
    model.add_point(worst, compiled_bytes(worst))
  assert model.worst_case(alive, 2)[:, 3].all()
  random_mask = np.zeros((6, 5), bool)
  for c, ops in enumerate([(1, 3), (2, 4), (0, 3, 4), (1, 2), (2, 3), (3,)]):
    random_mask[c, list(ops)] = True
  for mask in (alive, random_mask):
    assert model.estimate(mask) == pytest.approx(compiled_bytes(mask), rel=0.10)
  budget = model.estimate(model.worst_case(alive, 2)) * 1.001
  assert model.largest_k(alive, budget) == 2
  restored = cost_lib.CostModel.from_json(model.to_json(), space)
  assert restored.estimate(random_mask) == model.estimate(random_mask)


@pytest.mark.parametrize("space_name", ["nb201", "darts"])
def test_op_traces_add_up_to_network_traces(space_name):
  """The cost model traces each op alone once per distinct input; the
  network with that op on a set of choice points (all cells) costs the
  empty network plus those ops' per-op costs, as tracing the whole network
  says (up to the bytes of the op's weight on each choice point)."""
  config = tiny_config("single_darts")
  config.supernet.layers = 3
  space = spaces.make_space(space_name)
  image = (8, 8, 3)
  model = cost_lib.trace_cost_model(space, config.supernet, 10, image, 4)
  trace = lambda sub: cost_lib.traced_bytes(space, sub, config.supernet, 10, image, 4)
  empty = trace(tuple(() for _ in space.choice_points))
  assert model.empty == empty
  n = space.num_choice_points
  groups = [range(n)] if space_name == "nb201" else [range(0, 14), range(14, 16),
                                                     range(16, 18), range(18, n)]
  for members in groups:
    for name in ("nor_conv_3x3", "avg_pool_3x3", "skip_connect") if space_name == "nb201" else (
        "sep_conv_3x3", "dil_conv_5x5", "max_pool_3x3"):
      o = space.choice_points[0].ops.index(name)
      sub = tuple((o,) if c in members else () for c in range(n))
      network = trace(sub) - empty
      assert np.sum(model.per_op[list(members), o]) == pytest.approx(network, abs=64 * n)
      assert network > 100


def test_ops_are_traced_once_per_process(monkeypatch):
  """A second cost model of the same ops and inputs (a notebook's second
  search, the next method of a comparison) traces no op again and is the
  same model; other channels are other inputs, traced anew."""
  monkeypatch.setattr(cost_lib, "_TRACED_OP_COSTS", {})
  traced = []
  trace_op = cost_lib._traced_mixed_op_cost   # pylint: disable=protected-access
  monkeypatch.setattr(cost_lib, "_traced_mixed_op_cost",
                      lambda *args: traced.append(args) or trace_op(*args))
  config = tiny_config("single_darts")
  space = spaces.make_space("nb201")
  first = cost_lib.trace_cost_model(space, config.supernet, 10, (8, 8, 3), 4)
  ops_traced = len(traced)
  assert ops_traced > 0
  again = cost_lib.trace_cost_model(space, config.supernet, 10, (8, 8, 3), 4)
  assert len(traced) == ops_traced
  assert again.empty == first.empty
  np.testing.assert_array_equal(again.per_op, first.per_op)
  config.supernet.channels *= 2
  wider = cost_lib.trace_cost_model(space, config.supernet, 10, (8, 8, 3), 4)
  assert len(traced) == 2 * ops_traced
  assert wider.per_op[0, 3] > first.per_op[0, 3]


@pytest.mark.parametrize("space_name, scan_edges", [("nb201", False), ("darts", True),
                                                     ("mobile", False)])
def test_derived_networks_weights_are_counted_from_the_pool(space_name, scan_edges):
  """A sample's derived network's weights (summary's
  `derived_params_millions`), added up from the whole space's pool
  (`tasks.op_weight_counts`, per-edge paths also where the whole-space
  supernet stores scanned edges stacked), are those of its own supernet."""
  config = tiny_config()
  config.supernet.update(layers=3, scan_edges=scan_edges)
  if space_name == "mobile":
    config.supernet.width_mult = 0.25
  space = spaces.make_space(space_name, **({"blocks": "1,2,1,1,1,1"} if space_name == "mobile"
                                           else {}))
  image = (8, 8, 3)
  whole = supernet.build_supernet(space, space.full_subspace(), config.supernet, 10)
  pool, _ = tasks_lib.zero_pool(whole, space, image)
  counts = tasks_lib.op_weight_counts(whole, space, pool)
  assert sum(counts[1].values()) > 0
  rng = np.random.default_rng(0)
  for _ in range(3):
    alphas = [rng.normal(size=len(cp.ops)) for cp in space.choice_points]
    genotype = spaces.derive_genotype(space, space.full_subspace(), alphas)
    derived = spaces.genotype_subspace(space, genotype)
    network = supernet.build_supernet(space, derived, config.supernet, 10)
    assert tasks_lib.subspace_weight_count(counts, derived) == supernet.count_params(
        supernet.param_shapes(network, image))


def test_dead_ops_of_an_nb201_cell_cost_nothing():
  space = spaces.make_space("nb201")
  mask = space.mask_from_subspace(((3,), (2,), (3,), (0,), (0,), (0,)))  # node 3 gets none
  assert not cost_lib.live_ops(space, mask)[:, 1:].any()        # column 0 is `none`
  mask = space.mask_from_subspace(((3,), (0,), (3,), (0,), (0,), (2,)))  # 0->1->2->3
  np.testing.assert_array_equal(cost_lib.live_ops(space, mask)[:, 1:].any(-1),
                                [True, False, True, False, False, True])
  mask = space.mask_from_subspace(((3,), (3,), (0,), (0,), (0,), (2,)))  # node 1 unused
  np.testing.assert_array_equal(cost_lib.live_ops(space, mask)[:, 1:].any(-1),
                                [False, True, False, False, False, True])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, full_step_bytes):
  """A whole RADARS run (steps compiled ahead, the default), with the
  thread and subspace of every train-step compile."""
  path = workdir_lib.prepare(tmp_path_factory.mktemp("radars") / "run")
  config = budgeted(full_step_bytes)
  config.radars.final_epochs = 2.0   # (the samples run 1 epoch)
  # (the resumed runs below use them too)
  config.radars.pool_similarity = config.radars.fair_pool = True
  assert config.radars.compile_ahead
  compiles, steps_compiled, loop_compile_calls = [], [], []
  original = programs.LoopPrograms.compile_static_now
  original_compile = programs.LoopPrograms.compile

  def recording(self, subspace, steps, bytes_only=False):
    compiles.append((threading.current_thread().name, subspace, steps))
    start = time.perf_counter()
    compiled = original(self, subspace, steps, bytes_only)
    steps_compiled.append((compiled.bytes, time.perf_counter() - start))
    return compiled

  def timed_compile(self, *args, **kwargs):   # the loop's wait for each train step
    start = time.perf_counter()
    compiled = original_compile(self, *args, **kwargs)
    loop_compile_calls.append(time.perf_counter() - start)
    return compiled

  with pytest.MonkeyPatch.context() as patch, compile_clock.CompileClock() as clock:
    patch.setattr(programs.LoopPrograms, "compile_static_now", recording)
    patch.setattr(programs.LoopPrograms, "compile", timed_compile)
    summary = radars_loop.run(config, path, spaces.make_space("nb201"))
  summary["_compiles"] = compiles
  # measured here, apart from the search's own bookkeeping
  summary["_steps_compiled"], summary["_loop_compile_calls"] = steps_compiled, loop_compile_calls
  summary["_outer_clock"] = dict(clock.seconds)
  return config, path, summary


def test_radars_prunes_within_budget_and_writes_outputs(uninterrupted):
  config, path, summary = uninterrupted
  budget = config.memory_budget_gb * 1e9
  assert summary["method"] == "radars" and summary["over_budget_steps"] == 0
  assert all(r["compiled_bytes"] <= budget for r in summary["subspace_runs"])
  sampled = [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  assert sampled and max(max(r["ops_per_choice_point"]) for r in sampled) < 5   # k < ops
  assert summary["max_estimate_error"] is not None   # accuracy: test_cost_model_*
  alive = np.asarray(summary["alive"])
  assert alive.sum() < alive.size and np.all(alive.sum(-1) >= 1)   # pruned, never empty
  history = json.loads((path / "history.json").read_text())["iterations"]
  assert [h["iteration"] for h in history] == list(range(len(history)))
  for name in ("genotype.json", "summary.json", "plots/radars_rewards.png",
               "plots/radars_alive.png", "plots/radars_policy.png", "report/index.html"):
    assert (path / name).exists(), name
  assert len(summary["genotype"]["ops"]) == 6 and 0.0 <= summary["val_accuracy"] <= 1.0
  # how clearly the final search's and each sample's alphas decided
  margins = [m for m in summary["decision_margins"] if m is not None]
  assert summary["decision_margin_median"] == pytest.approx(np.median(margins))
  assert all(0.0 <= r["decision_margin"] <= 1.0 for r in sampled
             if max(r["ops_per_choice_point"]) > 1)
  # The knowledge pool, fair: every sample of the first iteration starts
  # from the same (empty) pool; after it every weight starts from a trained
  # one, the same op's or its family's (NB-201's two convolutions)
  first = [r for r in sampled if r["iteration"] == 0]
  later = [r for r in sampled if r["iteration"] != 0]
  assert len(first) == 2 and later
  assert all(r["pool_hits"] == 0 and not r["pool_inherited"] for r in first)
  assert all(r["pool_misses"] == 0 for r in later), [r["pool_misses"] for r in later]
  assert any(r["pool_inherited"] for r in later)
  assert summary["pool_hit_ratio"] > 0.3
  assert "Subspace runs" in (path / "report" / "index.html").read_text()


def test_radars_searches_the_whole_space_when_it_fits(tmp_path, full_step_bytes):
  """A budget the whole space fits: nothing to prune, no subspace sampled,
  the final search runs on the whole space."""
  config = tiny_config()
  config.memory_budget_gb = 2 * full_step_bytes / 1e9
  summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / "run"),
                       spaces.make_space("nb201"))
  assert summary["iterations"] == 0 and summary["best_sample"] is None
  assert [r["iteration"] for r in summary["subspace_runs"]] == ["final"]
  assert np.all(summary["alive"]) and summary["over_budget_steps"] == 0
  assert len(summary["genotype"]["ops"]) == 6


def test_sampled_subspaces_compile_ahead_once_each(uninterrupted):
  _, _, summary = uninterrupted
  sampled = [tuple(tuple(a) for a in r["subspace"]) for r in summary["subspace_runs"]
             if r["iteration"] != "final"]
  ahead = [(sub, steps) for thread, sub, steps in summary["_compiles"]
           if thread.startswith("radars-compile")]
  inline = [sub for thread, sub, _ in summary["_compiles"]
            if not thread.startswith("radars-compile")]
  # Every sample's step and the final search's compiled in the background
  # thread (the final's for its own run length: 2 epochs against the
  # samples' 1); inline compiles are the cost-model calibration and shrunk
  # subspaces.
  final = tuple(tuple(a) for a in summary["subspace"])
  assert len(ahead) == len(sampled) + 1 and ahead[-1][0] == final
  assert {steps for _, steps in ahead[:-1]} == {ahead[-1][1] // 2}
  assert not {sub for sub, _ in ahead} & set(inline)
  assert summary["compile_wait_seconds"] <= summary["compile_seconds"] + 1.0
  compiles = summary["compiles"]   # one record per train-step compile, in order
  assert compiles[0]["what"].startswith("calibration") and "final" in compiles[-1]["what"]
  # each sample's first compile and the final's came from the background
  assert all(c["what"].startswith(("static step, sample", "static step, final"))
             for c in compiles if c["ahead"])
  assert sum(c["ahead"] for c in compiles) == len(sampled) + 1 and compiles[-1]["ahead"]
  # The records against what this test measured itself: one record per
  # step compiled (their bytes), compile seconds within the wall time of
  # those compiles, the loop's waits within the wall time of its calls.
  measured = summary["_steps_compiled"]
  assert sorted(c["bytes"] for c in compiles) == sorted(b for b, _ in measured)
  walls = sum(w for _, w in measured)
  assert 0.3 * walls <= summary["compile_seconds"] <= walls + 0.01
  calls = summary["_loop_compile_calls"]
  assert len(calls) == len(compiles)
  assert sum(calls) - 0.01 * len(calls) - 0.05 <= summary["compile_wait_seconds"] <= sum(calls)
  breakdown = summary["compile_breakdown_seconds"]
  assert set(breakdown) == {"trace", "lower", "xla"} and breakdown["xla"] > 0
  outer = summary["_outer_clock"]   # a clock of this test's around the whole run
  for stage, seconds in breakdown.items():
    assert seconds <= outer[stage] + 1e-6, stage
  assert breakdown["xla"] >= 0.5 * outer["xla"]
  assert summary["compile_total_seconds"] <= sum(outer.values()) + 1e-6
  # The loop's own compiles (the steps it did not get from the background
  # among them) and its waits for the background's.
  inline = sum(c["compile_seconds"] for c in compiles if not c["ahead"])
  waited_ahead = sum(c["waited_seconds"] for c in compiles if c["ahead"])
  assert inline * 0.9 + waited_ahead <= summary["compile_loop_seconds"]
  assert summary["compile_loop_seconds"] < summary["search_seconds"]


def test_plots_refresh_at_most_once_a_period(tmp_path, monkeypatch):
  """After an iteration the loop's plots are drawn only once the refresh
  period has passed since the last drawing (a finished search's come
  from its report: test_radars_prunes_within_budget_and_writes_outputs)."""
  space = spaces.make_space("nb201")
  alive = np.ones((6, 5), bool)
  record = radars_loop.SearchRecord(history=[{
      "iteration": 0, "k": 2, "rewards": [0.1, 0.3], "best_reward": 0.3,
      "alive": alive.tolist(), "policy_probs": np.full((6, 5), 0.2).tolist(),
      "alive_ops": 30, "step_bytes": 10**6, "estimated_bytes": 1.1e6}])
  search_obj = types.SimpleNamespace(path=tmp_path, space=space, budget=2e6,
                                     plots_refreshed_at=time.monotonic())
  plots = tmp_path / "plots" / "radars_rewards.png"
  radars_loop.RadarsSearch.write_plots(search_obj, record)
  assert not plots.exists()
  monkeypatch.setattr(radars_loop, "PLOT_REFRESH_SECONDS", 0.0)
  radars_loop.RadarsSearch.write_plots(search_obj, record)
  assert plots.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Crash(Exception):
  pass


def crash_after_dnas_checkpoint(monkeypatch, config, path, space, run_tag: str) -> None:
  """Runs the search in `path` until the first mid-run DNAS checkpoint of
  the run `run_tag` (e.g. "it0_s1") is written, and crashes it there."""
  original_save = checkpointing.Checkpointer.save
  saves = []

  def crashing_save(self, step, state, metadata=None):
    original_save(self, step, state, metadata)
    if "dnas" in str(self.directory) and self.directory.name == run_tag:
      saves.append(step)
      self.wait()
      raise Crash(f"killed inside DNAS run {run_tag}")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", crashing_save)
  with pytest.raises(Crash):
    radars_loop.run(config, path, space)
  monkeypatch.setattr(checkpointing.Checkpointer, "save", original_save)
  assert len(saves) == 1


def test_crashed_and_resumed_run_ends_with_the_same_genotype(uninterrupted, tmp_path,
                                                             monkeypatch):
  config, ref_path, ref = uninterrupted
  # The interrupted runs compile each step when it is needed: the result
  # must equal the uninterrupted run's, whose steps compiled ahead.
  config = copy.deepcopy(config)
  config.radars.compile_ahead = False
  path = workdir_lib.prepare(tmp_path / "run")
  space = spaces.make_space("nb201")
  # Crash 1: inside the second sample's DNAS run, just after its mid-run checkpoint.
  crash_after_dnas_checkpoint(monkeypatch, config, path, space, "it0_s1")
  # Crash 2: right after the first iteration's checkpoint.
  original_end = radars_loop.RadarsSearch.write_plots

  def crash_after_iteration(self, meta):
    raise Crash("killed between iterations")

  monkeypatch.setattr(radars_loop.RadarsSearch, "write_plots", crash_after_iteration)
  with pytest.raises(Crash):
    radars_loop.run(config, path, space)
  monkeypatch.setattr(radars_loop.RadarsSearch, "write_plots", original_end)
  summary = radars_loop.run(config, path, space)
  assert summary["genotype"] == ref["genotype"]
  assert summary["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1e-6)
  rewards = [r["reward"] for r in summary["subspace_runs"] if r["iteration"] != "final"]
  ref_rewards = [r["reward"] for r in ref["subspace_runs"] if r["iteration"] != "final"]
  np.testing.assert_allclose(rewards, ref_rewards, atol=1e-6)
  assert summary["alive"] == ref["alive"]


def stop_at_second_log_step(monkeypatch, tag_suffix: str) -> None:
  """Makes `search.max_seconds` count as reached at the second log step of
  the DNAS run whose tag ends with `tag_suffix` (and never elsewhere)."""
  seen = {"tag": "", "calls": 0}
  original_train = search.Searcher._train

  def tagged_train(self, *args, **kwargs):
    seen["tag"], seen["calls"] = kwargs.get("tag", args[8]), 0
    return original_train(self, *args, **kwargs)

  def reached(self):
    if seen["tag"].endswith(tag_suffix):
      seen["calls"] += 1
      return seen["calls"] == 2
    return False

  monkeypatch.setattr(search.Searcher, "_train", tagged_train)
  monkeypatch.setattr(time_limit.TimeLimit, "reached", reached)


def test_a_search_stopped_by_its_time_limit_resumes_to_the_same_result(uninterrupted, tmp_path,
                                                                       monkeypatch):
  """Past `search.max_seconds` inside a sample's DNAS run, the search
  checkpoints, says where it stopped and why; rerun without the limit it
  ends as the uninterrupted run."""
  config, _, ref = uninterrupted
  config = copy.deepcopy(config)
  config.log_every = 1   # (a log step per train step; the numbers do not change)
  config.search.max_seconds = 1000.0
  path = workdir_lib.prepare(tmp_path / "run")
  space = spaces.make_space("nb201")
  with monkeypatch.context() as patch:
    stop_at_second_log_step(patch, "it0_s1")
    stopped = radars_loop.run(config, path, space)
  assert stopped["stopped"] == "time" and stopped["genotype"] is None
  assert "it0_s1 at step 2 of" in stopped["stop_reason"], stopped["stop_reason"]
  assert [r["sample"] for r in stopped["subspace_runs"]] == [0]
  # the worst step counts the stopped sample's, which ran
  assert stopped["subspace_runs"][0]["compiled_bytes"] <= stopped["step_bytes"] \
      <= stopped["memory_budget_bytes"]
  assert workdir_lib.read_json(path / "summary.json") == json.loads(json.dumps(stopped))
  assert not (path / "genotype.json").exists()
  assert "stopped: search.max_seconds=1000 reached" in main.console_summary(
      "search", stopped, path)
  config.search.max_seconds = None
  summary = radars_loop.run(config, path, space)
  assert summary["genotype"] == ref["genotype"]
  rewards = [r["reward"] for r in summary["subspace_runs"] if r["iteration"] != "final"]
  ref_rewards = [r["reward"] for r in ref["subspace_runs"] if r["iteration"] != "final"]
  np.testing.assert_allclose(rewards, ref_rewards, atol=1e-6)
  assert summary["search_seconds"] > stopped["search_seconds"]


def test_corrupt_latest_checkpoint_falls_back(uninterrupted, tmp_path):
  config, ref_path, _ = uninterrupted
  ckpt_dir = ref_path / "checkpoints" / "search"
  with checkpointing.Checkpointer(ckpt_dir) as ckpt:
    steps = ckpt.all_steps()
  assert len(steps) == 2
  latest = ckpt_dir / str(steps[-1])
  for f in latest.rglob("*"):
    if f.is_file() and "meta" not in str(f):
      f.write_bytes(b"garbage")
  search_obj = radars_loop.RadarsSearch(config, ref_path, spaces.make_space("nb201"))
  state = radars_loop.fresh_state(search_obj.space, config, *search_obj.task.full_pool())
  restored = search_obj.ckpt.restore_latest(state.tree())
  assert restored is not None and restored[0] == steps[0]
  assert (ckpt_dir / f"{steps[-1]}.corrupt").exists()
  search_obj.ckpt.close()


# ---------------------------------------------------------------------------
# Real SIGKILLs of `python -m radars_jax.main` (tests/sigkill_runner.py)
# ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def write_config_file(config, path: Path) -> Path:
  """A config file (as users pass to --config) that builds `config`."""
  path.write_text("from radars_jax import config_defaults\n\n"
                  "def get_config():\n"
                  "  config = config_defaults.base_config()\n"
                  f"  config.update({config.to_dict()!r})\n"
                  "  return config\n")
  return path


def subprocess_env():
  env = dict(os.environ)   # (the four host devices of conftest, as the reference)
  # This session's compilation cache: its entries hold the reference run's
  # programs (XLA's options in their keys name the cache's own directory,
  # so a copy elsewhere would not be found; the runs' configs turn off
  # their WORKDIR/jax_cache).
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(
      jax.config.jax_persistent_cache_min_compile_time_secs)
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  return env


def killed_at(moments: str, flags, timeout: float = 300.0) -> str:
  """Runs tests/sigkill_runner.py until it has reported every moment of
  `moments` (comma-separated), SIGKILLs it there; returns what it printed."""
  proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "sigkill_runner.py"), moments,
                           *flags], cwd=ROOT, env=subprocess_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  lines = queue.Queue()

  def read():
    for line in proc.stdout:
      lines.put(line)
    lines.put(None)

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  waiting = {m.split("=")[0] for m in moments.split(",")}
  seen = []
  try:
    while waiting:
      line = lines.get(timeout=timeout)
      if line is None:
        raise AssertionError(f"ended (status {proc.wait()}) before {sorted(waiting)}:\n"
                             + "".join(seen[-40:]))
      seen.append(line)
      if line.startswith("STOPPED "):
        waiting.discard(line.split()[1])
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
  assert proc.returncode == -signal.SIGKILL
  return "".join(seen)


def _search_dirs(path: Path) -> list:
  return sorted(p.name for p in (path / "checkpoints" / "search").iterdir())


def test_sigkilled_search_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
  """`python -m radars_jax.main` killed (SIGKILL: nothing runs after it) at
  moments held by tests/sigkill_runner.py, then blocked past its time
  limit (its watchdog ends it), rerun after each, the last time with its
  latest checkpoint corrupted: it ends as the uninterrupted run in this
  process (same config, same four devices)."""
  config, ref_path, ref = uninterrupted
  config = copy.deepcopy(config)
  config.compilation_cache = False   # (this session's cache instead: subprocess_env)
  # (a limit no run reaches, unless a moment makes it count as overrun)
  config.search.max_seconds, config.search.overrun_seconds = 1000.0, 0.0
  path = tmp_path / "run"
  flags = [f"--config={write_config_file(config, tmp_path / 'config.py')}",
           f"--workdir={path}"]
  # Search checkpoints (2 iterations of 2 samples): it * 3 + sample + 1 after
  # each sample, it * 3 + 3 after each iteration, 9 after the final search.
  # 1. After the last iteration: the compile thread inside the job compiling
  # the final search's step, orbax writing checkpoint 6 (not yet committed).
  killed_at("compile_thread,mid_save=6", flags)
  left = _search_dirs(path)
  assert "6" not in left and "5" in left, left
  assert any(name.startswith("6.orbax-checkpoint-tmp") for name in left), left
  # 2. Resumed from 5 (the iteration's end again), blocked in the final
  # search after its DNAS's first checkpoint, with `search.max_seconds`
  # counting as overrun from then on: its watchdog writes the stopped
  # summary and ends the process, status 0, with no signal.
  ended = subprocess.run([sys.executable, str(ROOT / "tests" / "sigkill_runner.py"),
                          "saved=dnas/final,overrun_when_stopped", *flags], cwd=ROOT,
                         env=subprocess_env(), text=True, capture_output=True, timeout=600)
  out = ended.stdout + ended.stderr
  assert ended.returncode == 0, out[-3000:]
  assert "resuming radars search at iteration 1, sample 2" in ended.stdout, out[-3000:]
  assert "STOPPED saved 2" in ended.stdout, out[-3000:]
  assert ("stopped: search.max_seconds=1000 overrun by search.overrun_seconds=0 inside a "
          "compile or a train step") in ended.stdout, out[-3000:]
  stopped = json.loads((path / "summary.json").read_text())
  assert stopped["stopped"] == "time" and stopped["genotype"] is None
  assert stopped["iterations_done"] == 2
  assert _search_dirs(path) == ["5", "6"]   # (the temporary directory removed)
  assert [p.name for p in (path / "checkpoints" / "dnas" / "final").iterdir()] == ["2"]
  # 3. Checkpoint 6 corrupted: the same command falls back to 5, and goes on
  # to the end (its final search from the DNAS checkpoint the stop left).
  for f in (path / "checkpoints" / "search" / "6").rglob("*"):
    if f.is_file() and "meta" not in str(f):
      f.write_bytes(b"garbage")
  result = subprocess.run([sys.executable, "-m", "radars_jax.main", *flags], cwd=ROOT,
                          env=subprocess_env(), text=True, capture_output=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "checkpoint step 6" in result.stderr and "unreadable" in result.stderr
  assert "resuming radars search at iteration 1, sample 2" in result.stdout
  assert "6.corrupt" in _search_dirs(path)
  summary = json.loads((path / "summary.json").read_text())
  assert summary["genotype"] == ref["genotype"]
  assert summary["subspace"] == ref["subspace"] and summary["alive"] == ref["alive"]
  for a, b in zip(summary["alphas"], ref["alphas"], strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert summary["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1e-6)
  assert summary["search_seconds"] > stopped["search_seconds"]
  assert ([r["subspace"] for r in summary["subspace_runs"]]
          == [r["subspace"] for r in ref["subspace_runs"]])
  np.testing.assert_allclose([r["reward"] for r in summary["subspace_runs"][:-1]],
                             [r["reward"] for r in ref["subspace_runs"][:-1]], atol=1e-6)
  history = json.loads((path / "history.json").read_text())["iterations"]
  ref_history = json.loads((ref_path / "history.json").read_text())["iterations"]
  assert [h["alive"] for h in history] == [h["alive"] for h in ref_history]
  np.testing.assert_allclose([h["policy_probs"] for h in history],
                             [h["policy_probs"] for h in ref_history], atol=1e-6)
