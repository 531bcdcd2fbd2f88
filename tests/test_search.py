"""A whole DNAS search, in process, on tiny synthetic data: reproducible per
seed, and the same on one device and on four."""
import copy
import json
import threading

import conftest
import jax
import numpy as np
import pytest

from radars_jax import compile_clock
from radars_jax import config_check
from radars_jax import config_defaults
from radars_jax.dnas import steps as dnas_steps
from radars_jax import parallel
from radars_jax.dnas import search
from radars_jax import time_limit
from radars_jax.nas import spaces
from radars_jax import workdir as workdir_lib


def tiny_config(method="single_darts"):
  config = config_defaults.base_config()
  config.method = method
  config.progress_bar = False
  config.data.name = "synthetic"
  config.data.image_size = 8
  config.data.train_size = 160
  config.data.test_size = 16
  config.data.holdout_size = 32
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.space.name = "nb201"
  config.supernet.channels = 4
  config.supernet.cells_per_stage = 1
  config.dnas.epochs = 2
  return config


def _run(config, devices):
  mesh = parallel.make_mesh(devices)
  data = search.load_search_data(config.data, mesh)
  space = spaces.space_from_config(config.space)
  searcher = search.Searcher(config, mesh, data, space)
  return searcher.run_dnas(space.full_subspace(), config.dnas.epochs, jax.random.key(config.seed))


@pytest.fixture(scope="module")
def one_device_result():
  return _run(tiny_config(), jax.devices()[:1])


def test_same_seed_same_genotype(one_device_result):
  again = _run(tiny_config(), jax.devices()[:1])
  assert again.genotype == one_device_result.genotype
  for a, b in zip(again.alphas, one_device_result.alphas):
    np.testing.assert_array_equal(a, b)


def test_four_devices_match_one(one_device_result):
  assert len(jax.devices()) >= 4, "tests run with 4 host devices (conftest)"
  four = _run(tiny_config(), jax.devices()[:4])
  # One and four devices sum the batch in other orders, and Adam normalises
  # each gradient: an alpha whose gradient is about 0 moves by up to its
  # learning rate (3e-4) a step in whichever direction the rounding sends
  # it. So alphas near 0 agree to a fraction of one step, the others to 0.1%.
  for a, b in zip(four.alphas, one_device_result.alphas):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-5)
  np.testing.assert_allclose(four.train_loss, one_device_result.train_loss, rtol=1e-3)
  assert four.genotype == one_device_result.genotype


def test_second_order_search_runs_the_unrolled_step_and_moves_alphas(monkeypatch):
  """`method=darts, dnas.order=2`: the search's train step is DARTS's
  second-order one (it traces the unrolled objective), runs, and moves the
  alphas from their zero start. Kept small for the compile of the double
  backward pass: one DARTS cell, ops none and skip_connect (no weights)."""
  config = tiny_config(method="darts")
  config.space.name = "darts"
  config.supernet.layers = 1
  config.dnas.order = 2
  config.dnas.alpha_init_scale = 0.0   # alphas start at exactly 0
  config.dnas.alpha_lr = 0.01          # (Adam: ~0.01 a step)
  traced = []
  original = dnas_steps.unrolled_alpha_loss
  monkeypatch.setattr(dnas_steps, "unrolled_alpha_loss",
                      lambda *args, **kwargs: traced.append(1) or original(*args, **kwargs))
  mesh = parallel.make_mesh(jax.devices()[:1])
  space = spaces.space_from_config(config.space)
  searcher = search.Searcher(config, mesh, search.load_search_data(config.data, mesh), space)
  assert searcher.mode == "second_order"
  ops = (space.op_names.index("none"), space.op_names.index("skip_connect"))
  result = searcher.run_dnas(tuple(ops for _ in range(space.num_choice_points)), 1,
                             jax.random.key(0))
  assert traced, "the second-order step never traced the unrolled objective"
  assert result.steps == searcher.steps_per_epoch() >= 2
  assert np.isfinite(result.train_loss)
  # One layer is a reduction cell (`supernet.reduction_cells(1)`): each of
  # its edges' alphas took Adam steps; the normal cell's, outside the
  # network, have no gradient and stay 0.
  moved = {cp.name.split("/")[0]: [] for cp in space.choice_points}
  for cp, a in zip(space.choice_points, result.alphas):
    moved[cp.name.split("/")[0]].append(float(np.abs(a).max()))
  assert min(moved["reduce"]) > 1e-5 and max(moved["normal"]) == 0.0, moved


@pytest.mark.parametrize("method", ["single_darts", "darts"])
def test_batches_compiled_in_another_thread_are_what_the_run_calls(method):
  """`compile_batches` in a background thread (the RADARS loop's compile
  queue) compiles the batch programs a run calls: the weights' split, and
  the alphas' where the search is bi-level; the run's own calls, on its own
  keys and steps, then compile nothing."""
  config = tiny_config(method)
  mesh = parallel.make_mesh(jax.devices()[:1])
  space = spaces.space_from_config(config.space)
  searcher = search.Searcher(config, mesh, search.load_search_data(config.data, mesh), space)
  worker = threading.Thread(target=searcher.compile_batches)
  worker.start()
  worker.join()
  key_w, key_a = search._data_keys(jax.random.key(3))   # pylint: disable=protected-access
  names = ["weights"] + (["alphas"] if method == "darts" else [])
  with compile_clock.CompileClock() as clock:
    for name, key in zip(names, (key_w, key_a)):
      for step in range(3):
        jax.block_until_ready(searcher.batch_fn(name)(key, step))
  assert clock.programs == 0 and clock.total == 0.0, clock.seconds


def test_run_search_writes_outputs(tmp_path):
  config = tiny_config(method="darts")
  config.dnas.epochs = 1
  config.dnas.derived_finetune_steps = 3
  summary = search.run_search(config, str(tmp_path))
  for name in ("config.json", "genotype.json", "summary.json", "metrics.jsonl"):
    assert (tmp_path / name).exists(), name
  assert list((tmp_path / "tensorboard").iterdir())
  assert (tmp_path / "report" / "index.html").exists()
  saved = workdir_lib.read_json(tmp_path / "summary.json")
  for key in ("method", "space", "genotype", "val_accuracy", "search_seconds",
              "compile_seconds", "step_bytes", "seed"):
    assert key in saved, key
  assert saved["genotype"] == workdir_lib.read_json(tmp_path / "genotype.json")
  assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["step_bytes"] > 0
  # the defaults' picks on this CPU, as run (the workdir's config.json keeps auto)
  assert saved["performance_options"] == {
      "supernet.depthwise_impl": {"value": "shifted", "picked": True},
      "supernet.scan_edges": {"value": True, "picked": True},
      "supernet.compute_dtype": {"value": "float32", "picked": True}}
  assert workdir_lib.read_json(tmp_path / "config.json")["supernet"]["scan_edges"] is None
  # What the numbers must be, worked out here: an NB-201 genotype keeps the
  # strongest op of each edge's alphas; the accuracy counts holdout examples;
  # one epoch of the weight half (of the examples outside the holdout) in
  # batches; the summary's loss is the last one logged to metrics.jsonl.
  names = saved["space_ops"]
  assert saved["genotype"]["ops"] == [names[int(np.argmax(a))] for a in saved["alphas"]]
  top2 = [np.sort(np.exp(a) / np.exp(a).sum())[-2:] for a in map(np.asarray, saved["alphas"])]
  np.testing.assert_allclose(saved["decision_margins"], [hi - lo for lo, hi in top2], atol=1e-6)
  holdout = config.data.holdout_size
  assert abs(saved["val_accuracy"] * holdout - round(saved["val_accuracy"] * holdout)) < 1e-9
  weight_half = (config.data.train_size - holdout) // 2
  assert saved["steps"] == weight_half // config.data.batch_size
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [m for m in logged if m["name"] == "dnas/loss"]
  assert losses and losses[-1]["step"] == saved["steps"]
  assert losses[-1]["value"] == pytest.approx(saved["train_loss"], rel=1e-6)
  # the search's own thread compiled the train step (and every other program)
  assert (summary["compile_seconds"] * 0.9 <= summary["compile_loop_seconds"]
          <= summary["compile_total_seconds"] + 1e-6)
  assert summary["compile_loop_seconds"] < summary["search_seconds"]


@pytest.mark.parametrize("method,order,inner", [("single_darts", 1, "single_level"),
                                                ("darts", 2, "single_level"),
                                                ("radars", 1, "single_level")])
def test_passes_in_loop_is_refused_outside_first_order(method, order, inner):
  config = config_defaults.base_config()
  config.data.holdout_size = 287   # of the 1,437 training digits
  config.memory_budget_gb = 1.0    # (radars needs one)
  config.method, config.dnas.order, config.dnas.inner_mode = method, order, inner
  config.dnas.passes_in_loop = True
  with pytest.raises(search.UserError, match="passes_in_loop"):
    config_check.check_config(config)
  config.method, config.dnas.order, config.dnas.inner_mode = "darts", 1, "first_order"
  config_check.check_config(config)   # first order: accepted
  config.method = "radars"
  config_check.check_config(config)


@pytest.mark.parametrize("method", ["radars", "rl", "random"])
def test_scan_edges_is_refused_for_subspace_searches(method):
  """A loop method's subspaces run per edge while its cost model would be
  traced on scanned cells (estimates measured 30-35% low): refused."""
  config = config_defaults.base_config()
  config.data.holdout_size = 287   # of the 1,437 training digits
  config.memory_budget_gb = 1.0    # (radars needs one)
  config.method = method
  config.supernet.scan_edges = True
  with pytest.raises(search.UserError, match="scan_edges"):
    config_check.check_config(config)
  config.supernet.scan_edges, config.supernet.scan_switched = False, True
  config_check.check_config(config)   # the shared programs' scan: accepted
  config.method, config.supernet.scan_edges = "single_darts", True
  config_check.check_config(config)   # whole-space DNAS: accepted


@pytest.fixture(scope="module")
def darts_reference(tmp_path_factory):
  """A tiny whole-space `darts` search, uninterrupted, and its config (log
  and checkpoint intervals do not change its numbers)."""
  config = tiny_config(method="darts")
  config.log_every = 1
  config.dnas.derived_finetune_steps = 0
  return config, search.run_search(config, str(tmp_path_factory.mktemp("darts") / "run"))


def test_a_whole_space_search_stopped_by_its_time_limit_resumes(darts_reference, tmp_path,
                                                                 monkeypatch):
  """`darts` past `search.max_seconds` at a log step checkpoints and
  writes a stopped summary; rerun with a larger limit, it resumes there,
  counts the seconds already spent and ends as an uninterrupted run."""
  config, reference = darts_reference
  config = copy.deepcopy(config)
  config.search.max_seconds = 1000.0
  calls = []

  def reached(self):
    calls.append(1)
    return len(calls) == 3   # (the third log step)

  with monkeypatch.context() as patch:
    patch.setattr(search.TimeLimit, "reached", reached)
    stopped = search.run_search(config, str(tmp_path / "run"))
  assert stopped["stopped"] == "time" and stopped["steps_done"] == 3
  assert "darts at step 3 of" in stopped["stop_reason"]
  assert workdir_lib.read_json(tmp_path / "run" / "summary.json")["stopped"] == "time"
  config.search.max_seconds = 2000.0
  resumed = search.run_search(config, str(tmp_path / "run"))
  assert resumed["genotype"] == reference["genotype"]
  np.testing.assert_allclose(resumed["alphas"], reference["alphas"], atol=1e-6)
  assert resumed["search_seconds"] > stopped["search_seconds"]


def test_a_search_blocked_past_its_limit_is_ended_by_the_watchdog(darts_reference, tmp_path,
                                                                   monkeypatch):
  """A train step that has not returned `search.overrun_seconds` past the
  limit (no log step comes to check it): the watchdog writes the stopped
  summary and ends the process (here `end_process` is recorded and the
  blocked step then dies, as the process would); rerun, the search
  resumes from its last checkpoint and ends as an uninterrupted run."""
  config, reference = darts_reference
  config = copy.deepcopy(config)
  config.log_every = 1000   # (no log step checks the limit)
  config.radars.checkpoint_every_steps = 2
  config.search.max_seconds, config.search.overrun_seconds = 1000.0, 7.0
  blocked, ended, statuses = threading.Event(), threading.Event(), []
  batch_fn = search.Searcher.batch_fn

  def blocking_batch_fn(self, split_name, sample_mesh=None):
    gather = batch_fn(self, split_name, sample_mesh)

    def gather_or_block(key, step):
      if split_name == "weights" and step == 5:
        blocked.set()
        assert ended.wait(60), "the watchdog did not end the run"
        raise conftest.Killed("the process ended")
      return gather(key, step)
    return gather_or_block

  def end_process(status):
    statuses.append(status)
    ended.set()

  with monkeypatch.context() as patch:
    patch.setattr(search.Searcher, "batch_fn", blocking_batch_fn)
    # (the limit is overrun once the step blocks, not before)
    patch.setattr(time_limit.TimeLimit, "overrun",
                  lambda self, grace: grace == 7.0 and blocked.is_set())
    patch.setattr(time_limit, "end_process", end_process)
    patch.setattr(time_limit.Watchdog, "POLL_SECONDS", 0.01)
    with pytest.raises(conftest.Killed):
      search.run_search(config, str(tmp_path / "run"))
  assert statuses == [0]
  stopped = workdir_lib.read_json(tmp_path / "run" / "summary.json")
  assert stopped["stopped"] == "time" and stopped["steps_done"] == 4, stopped
  assert "overrun by search.overrun_seconds=7 inside a compile or a train step" \
      in stopped["stop_reason"]
  config.search.max_seconds = None
  resumed = search.run_search(config, str(tmp_path / "run"))
  assert resumed["genotype"] == reference["genotype"]
  np.testing.assert_allclose(resumed["alphas"], reference["alphas"], atol=1e-6)
