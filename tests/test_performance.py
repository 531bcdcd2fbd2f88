"""What `auto` picks for the performance options, by platform and method,
and that an explicit setting wins."""
import pytest

from radars_jax import config_defaults
from radars_jax import performance


def _config(method="single_darts", space="nb201"):
  config = config_defaults.base_config()
  config.method, config.space.name = method, space
  return config


@pytest.mark.parametrize("backend,impl", [("cpu", "shifted"), ("gpu", "xla"), ("tpu", "xla")])
def test_depthwise_kernels_by_platform(backend, impl):
  resolved, options = performance.resolve(_config(), backend=backend)
  assert resolved.supernet.depthwise_impl == impl
  assert options["supernet.depthwise_impl"] == {"value": impl, "picked": True}
  # the subspace searches keep the kernels their cost model adds up
  for method in ("radars", "rl", "random"):
    assert performance.resolve(_config(method), backend=backend)[0].supernet.depthwise_impl == "xla"


@pytest.mark.parametrize("method,scan_edges", [
    ("darts", True), ("single_darts", True), ("radars", False), ("rl", False), ("random", False)])
def test_scanned_edges_for_whole_space_dnas_switched_scans_for_subspace_searches(method,
                                                                                  scan_edges):
  resolved, options = performance.resolve(_config(method, "darts"), backend="gpu")
  assert resolved.supernet.scan_edges is scan_edges
  assert resolved.supernet.scan_switched is True
  # NB-201 cells: switched per edge (scanning won nothing there)
  assert performance.resolve(_config(method), backend="gpu")[0].supernet.scan_switched is False
  # each run lists the options that change it
  whole_space = method in ("darts", "single_darts")
  assert ("supernet.scan_edges" in options) == whole_space
  assert ("supernet.scan_switched" in options) == (not whole_space)


def test_no_scan_where_an_op_has_no_stacked_form(monkeypatch):
  from radars_jax.nas import ops  # pylint: disable=import-outside-toplevel
  has = ops.has_functional_form
  monkeypatch.setattr(ops, "has_functional_form",
                      lambda name, stride: name != "nor_conv_3x3" and has(name, stride))
  assert performance.resolve(_config(), backend="cpu")[0].supernet.scan_edges is False


def test_an_explicit_setting_wins_and_is_not_announced():
  config = _config()
  config.supernet.depthwise_impl = "xla"
  config.supernet.scan_edges = False
  config.supernet.compute_dtype = "bfloat16"
  resolved, options = performance.resolve(config, backend="cpu")
  assert (resolved.supernet.depthwise_impl, resolved.supernet.scan_edges,
          resolved.supernet.compute_dtype) == ("xla", False, "bfloat16")
  assert not any(entry["picked"] for entry in options.values())
  assert performance.describe(options, "method=single_darts") is None
  assert config.supernet.scan_edges is False and config.supernet.depthwise_impl == "xla"
  # the config passed in is left as it was (auto stays auto)
  untouched = _config()
  performance.resolve(untouched, backend="cpu")
  assert untouched.supernet.scan_edges is None and untouched.supernet.depthwise_impl == "auto"


def test_the_picks_are_one_line_and_retraining_picks_its_own_kernels():
  _, options = performance.resolve(_config("radars"), backend="cpu")
  line = performance.describe(options, "method=radars", backend="cpu")
  assert line == ("radars_jax: on cpu, method=radars: supernet.depthwise_impl=xla, "
                  "supernet.scan_switched=False, supernet.compute_dtype=float32 "
                  "(auto; docs/performance.md)")
  config = _config()
  config.train = config_defaults.train_config()
  resolved, options = performance.resolve(config, "train", backend="cpu")
  assert resolved.train.depthwise_impl == "shifted"
  assert list(options) == ["train.depthwise_impl", "train.compute_dtype"]
