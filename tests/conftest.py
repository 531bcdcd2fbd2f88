"""Test set-up: four CPU devices, so data-parallel code is tested here too
(as Flax does), and a quiet TensorFlow."""
import os

# XLA's CPU backend set to compile fast rather than run fast: LLVM
# optimisation level 0 (its default is 3) and the classic kernel emitters
# instead of the MLIR fusion emitters. The suite is mostly compiling: four of
# its files took 196 s against 286 s at level 1 with the fusion emitters
# (docs/performance.md), though the tests that train for hundreds of steps
# run slower. Buffers are assigned before code generation, so the level does
# not change the bytes the budget tests read (tests/test_dnas.py); without
# the fusion emitters they differ slightly (539,540 against 539,412 for
# test_radars's whole-space step), and every compile in the suite uses the
# same setting. The command-line runs that tests start get it too
# (ONE_DEVICE_XLA_FLAGS: on one device).
ONE_DEVICE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS",
                      f"--xla_force_host_platform_device_count=4 {ONE_DEVICE_XLA_FLAGS}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


SESSION_CACHE = "RADARS_JAX_TEST_SESSION_CACHE"


class Killed(Exception):
  """A training run "killed" by a test (`killed_after`)."""


def killed_after(program, step_fn: str, steps: int):
  """`retrain.steps.program` whose `step_fn` (`train_step` or
  `train_on_batch`) raises `Killed` after `steps` calls: a run killed
  between two checkpoints."""
  import dataclasses  # pylint: disable=import-outside-toplevel

  def killed_program(spec, mesh):
    prog = program(spec, mesh)
    calls = [0]

    def step(*args):
      calls[0] += 1
      if calls[0] > steps:
        raise Killed(f"killed after step {steps}")
      return getattr(prog, step_fn)(*args)
    return dataclasses.replace(prog, **{step_fn: step})

  return killed_program


def import_experiment(name: str):
  """The module experiments/NAME.py (the benchmark scripts are not a package)."""
  import importlib  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "experiments")
  sys.path.insert(0, folder)
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(folder)


def pytest_configure(config):
  """A persistent compilation cache for the session, one directory for all
  of its pytest-xdist workers (made by the controller before it starts
  them; they inherit its environment): a resumed search in a test compiles
  the same steps as the run it resumes and reads them back, and a program
  one worker compiled is read by the other."""
  if hasattr(config, "workerinput") and SESSION_CACHE not in os.environ:
    raise RuntimeError(f"a pytest-xdist worker without {SESSION_CACHE}")
  import tempfile  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  if SESSION_CACHE not in os.environ:
    os.environ[SESSION_CACHE] = tempfile.mkdtemp(prefix="radars_jax_test_cache_")
  cache = os.environ[SESSION_CACHE]
  # pytest-xdist hands out files in SLOW_FILES_FIRST's order (by default
  # it orders them by their number of tests)
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False
  # the command line's runs (in this process and in the subprocesses tests
  # start) use it too, not the user's cache (radars_jax.main.CACHE_DIR_ENV)
  os.environ["RADARS_JAX_CACHE_DIR"] = cache
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  """The session's cache is deleted by the process that made it (the
  controller, after its workers have ended)."""
  import shutil  # pylint: disable=import-outside-toplevel
  if not hasattr(config, "workerinput") and os.environ.get(SESSION_CACHE):
    shutil.rmtree(os.environ.pop(SESSION_CACHE), ignore_errors=True)


# The files that take minutes go first, longest first (by their seconds
# in a run with `--durations=0`): pytest-xdist (`--dist loadfile`) hands
# files to its workers in collection order as they free up, and a slow file
# started last would run alone at the end while the other worker sits idle.
SLOW_FILES_FIRST = ("test_experiments.py", "test_radars.py", "test_multiprocess.py",
                    "test_train.py", "test_parallel_samples.py", "test_agent_radars.py",
                    "test_scan_edges.py", "test_mobile.py", "test_a2d.py", "test_budget.py",
                    "test_baselines.py", "test_cli.py", "test_search.py", "test_notebook.py",
                    "test_hardware.py", "test_switched.py", "test_imagenet.py",
                    "test_program_size.py", "test_controller.py", "test_remat.py",
                    "test_agents.py", "test_tabular.py", "test_depthwise.py", "test_dnas.py",
                    "test_report.py", "test_supernet.py", "test_precision.py", "test_data.py",
                    "test_conv.py", "test_measurements.py")


def pytest_collection_modifyitems(config, items):
  del config
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return SLOW_FILES_FIRST.index(name) if name in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)
  items.sort(key=rank)   # stable: the order inside each file is kept


# Every module a test skips without (tensorflow-datasets, requests, nbformat,
# nbclient) comes with `pip install -e ".[test]"`, so after README's install
# nothing should skip: a skip means a test that did not run. Each skip is
# listed with its reason, and it fails the run (README's test command, which
# .ci/run runs) unless RADARS_JAX_ALLOW_SKIPS=1 is set (a partial install).
# A skip whose reason starts with "optional:" (data beside the repository,
# such as ../shared's NAS-Bench-201 table) is listed and does not fail it.
ALLOW_SKIPS = "RADARS_JAX_ALLOW_SKIPS"
OPTIONAL = "optional:"


def _skips(config) -> list:
  reporter = config.pluginmanager.get_plugin("terminalreporter")
  return list(reporter.stats.get("skipped", [])) if reporter is not None else []


def _required_skips(config) -> list:
  return [r for r in _skips(config) if not _skip_reason(r).startswith(OPTIONAL)]


def _skip_reason(report) -> str:
  longrepr = report.longrepr
  reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
  return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  del exitstatus
  skips = _skips(config)
  if not skips or hasattr(config, "workerinput"):
    return
  terminalreporter.section("skipped tests (a test that did not run)")
  for report in skips:
    terminalreporter.write_line(f"SKIPPED {report.nodeid}: {_skip_reason(report)}")
  required = _required_skips(config)
  if required and os.environ.get(ALLOW_SKIPS) != "1":
    terminalreporter.write_line(
        f"{len(required)} required test(s) skipped: the run fails (install the test extra, "
        f'pip install -e ".[test]"; or set {ALLOW_SKIPS}=1 to allow skips)')


def pytest_sessionfinish(session, exitstatus):
  """A skipped test fails the run (see ALLOW_SKIPS); on the controller only
  (under pytest-xdist the workers' skips are reported to it)."""
  if hasattr(session.config, "workerinput") or os.environ.get(ALLOW_SKIPS) == "1":
    return
  if _required_skips(session.config) and exitstatus == 0:
    session.exitstatus = 1
