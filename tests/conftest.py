"""Test set-up: four CPU devices, so data-parallel code is tested here too
(as Flax does), and a quiet TensorFlow."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_configure(config):
  """A persistent compilation cache for the session: a resumed search in a
  test compiles the same steps as the run it resumes, and reads them back."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  cache = tempfile.mkdtemp(prefix="radars_jax_test_cache_")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The files that take minutes go first: pytest-xdist (`--dist loadfile`)
# hands files to its workers in collection order, and a slow file started
# last would run alone at the end while the other worker sits idle.
SLOW_FILES_FIRST = ("test_radars.py", "test_baselines.py", "test_experiments.py",
                    "test_switched.py", "test_program_size.py")


def pytest_collection_modifyitems(config, items):
  del config
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return SLOW_FILES_FIRST.index(name) if name in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)
  items.sort(key=rank)   # stable: the order inside each file is kept
