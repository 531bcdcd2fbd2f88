"""radars_jax.measurements: what a search measures before it trains is kept
under a key of everything it depends on, and a rerun of the same search
reads it back instead of tracing and compiling again, to the same cost model."""
import json

import numpy as np

from radars_jax import measurements
from radars_jax import workdir as workdir_lib
from radars_jax.nas import spaces
from radars_jax.radars import cost_model as cost_lib
from radars_jax.radars import loop as radars_loop

from test_radars import budgeted, whole_space_step_bytes


def test_a_value_is_kept_under_its_inputs_and_environment(tmp_path, monkeypatch):
  kept = measurements.Measurements(tmp_path / "m")
  calls = []

  def measure(value):
    return lambda: calls.append(value) or value

  assert kept.get("kind", {"a": 1}, measure({"bytes": 5})) == ({"bytes": 5}, False)
  assert kept.get("kind", {"a": 1}, measure({"bytes": 6})) == ({"bytes": 5}, True)
  assert kept.get("kind", {"a": 2}, measure({"bytes": 7})) == ({"bytes": 7}, False)
  assert kept.get("other", {"a": 1}, measure({"bytes": 8})) == ({"bytes": 8}, False)
  # an edit of the library (or another jax) measures again
  monkeypatch.setattr(measurements, "source_digest", lambda: "edited")
  assert kept.get("kind", {"a": 1}, measure({"bytes": 9})) == ({"bytes": 9}, False)
  assert calls == [{"bytes": 5}, {"bytes": 7}, {"bytes": 8}, {"bytes": 9}]
  assert not list((tmp_path / "m").glob("*.tmp"))


def test_an_unreadable_value_is_measured_again(tmp_path):
  kept = measurements.Measurements(tmp_path)
  kept.store("kind", {"a": 1}, [1, 2])
  [path] = tmp_path.glob("kind-*.json")
  path.write_text("{not json")
  assert kept.get("kind", {"a": 1}, lambda: [3]) == ([3], False)
  assert json.loads(path.read_text())["value"] == [3]


def test_no_folder_keeps_nothing(tmp_path):
  class Config(dict):
    get = dict.get

  off = measurements.Measurements.for_config(Config(compilation_cache=False,
                                                    compilation_cache_dir=str(tmp_path)))
  unset = measurements.Measurements.for_config(Config(compilation_cache=True))
  for kept in (off, unset):
    assert kept.folder is None
    kept.store("kind", {}, 1)
    assert kept.lookup("kind", {}) is None
  on = measurements.Measurements.for_config(Config(compilation_cache=True,
                                                   compilation_cache_dir=str(tmp_path)))
  assert on.folder == tmp_path / measurements.FOLDER
  assert not list(tmp_path.iterdir())


def test_config_key_leaves_out_what_measures_nothing():
  from radars_jax import config_defaults  # pylint: disable=import-outside-toplevel
  config, other = config_defaults.base_config(), config_defaults.base_config()
  other.seed, other.progress_bar, other.compilation_cache_dir = 7, False, "/elsewhere"
  assert measurements.config_key(config) == measurements.config_key(other)
  other.data.batch_size = 2 * config.data.batch_size
  assert measurements.config_key(config) != measurements.config_key(other)


def _prepared(config, path, space):
  """A search's cost model, traced and calibrated (`RadarsSearch.prepare`),
  and its record."""
  search = radars_loop.RadarsSearch(config, workdir_lib.prepare(path), space)
  state, record = search.restore()
  try:
    return search.prepare(record, state.alive), record
  finally:
    search.programs.close()


def test_a_rerun_reads_its_cost_model_and_calibration_back(tmp_path, monkeypatch):
  """The same search twice with one cache folder: the second traces no
  cost model and compiles no calibration, and its calibrated cost model
  (what sizes every subspace after it) is the first's."""
  config = budgeted(whole_space_step_bytes())
  config.compilation_cache_dir = str(tmp_path / "cache")
  space = spaces.make_space("nb201")
  first, record = _prepared(config, tmp_path / "first", space)
  assert [c["what"] for c in record.compiles.records][:1] == [
      "calibration, worst case of 1 op (bytes only)"]
  assert len(first.points) == 2
  assert len(list((tmp_path / "cache" / measurements.FOLDER).glob("*.json"))) == 3

  def no_trace(*args, **kwargs):
    raise AssertionError("traced again")

  monkeypatch.setattr(cost_lib, "trace_cost_model", no_trace)
  second, record = _prepared(config, tmp_path / "second", space)
  assert not record.compiles.records
  assert second.to_json() == first.to_json()
  np.testing.assert_array_equal(second.worst_case(np.ones_like(second.per_op, bool), 2),
                                first.worst_case(np.ones_like(first.per_op, bool), 2))
