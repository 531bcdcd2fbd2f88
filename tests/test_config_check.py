"""config_check: every config field, walked with bad values (wrong type,
out of range, unknown name), is refused with one line naming it; the
checks that span fields, the data's size and the files a run reads; the
budget a search gets from its device when none is set."""
import importlib.util
import math
import types
from pathlib import Path

import chex
import ml_collections
import pytest

from radars_jax import config_check
from radars_jax import config_defaults
from radars_jax import memory
from radars_jax.retrain import train
from radars_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _config_file(name: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def good_config(table_path: str) -> ml_collections.ConfigDict:
  """Every field there is, each with a good value: the defaults, the train
  block and the tabular table block."""
  config = config_defaults.base_config()
  train.add_train_config(config)
  config.data.holdout_size = 287       # digits: 1,437 training examples
  config.genotype = "DARTS_V2"
  with config.unlocked():
    del config["table"]               # the training's CSV path: the block instead
    config.table = ml_collections.ConfigDict({
        "path": table_path, "metric": "cifar10-val", "report": "cifar10-test",
        "queries": 100, "seeds": 2, "methods": "ppo,random", "transfer_path": None,
        "transfer_metric": None, "transfer_queries": None})
  return config


@pytest.fixture(name="table_path")
def fixture_table_path(tmp_path):
  path = tmp_path / "table.csv"
  path.write_text("arch_str,cifar10-val,cifar10-test\n")
  return str(path)


def with_value(config, field: str, value) -> ml_collections.ConfigDict:
  """A copy of `config` with `field` set to `value` of any type (rebuilt from
  a dict, so ConfigDict's own type check does not stop it first)."""
  tree = config.to_dict()
  *blocks, name = field.split(".")
  node = tree
  for block in blocks:
    node = node[block]
  node[name] = value
  return ml_collections.ConfigDict(tree)


def bad_values(rule: config_check.Rule) -> list:
  """Values `rule` must refuse: wrong type, out of range, unknown name."""
  if rule.kind in ("int", "float"):
    values = ["x", True]
    if rule.kind == "int":
      values.append(1.5)
    else:
      values.append(math.nan)
    if rule.low is not None:
      values.append(rule.low if rule.low_open else rule.low - 1)
    if rule.high is not None:
      values.append(rule.high + 1 if rule.high_closed else rule.high)
    return values
  if rule.kind == "bool":
    return ["yes", 1]
  if rule.kind == "str":
    return [3, ""]
  if rule.kind == "choice":
    return ["no_such_name", 99] if all(isinstance(c, str) for c in rule.choices) else [99, "1"]
  if rule.kind == "floats":
    return [(0.5,) * ((rule.length or 1) + 1) if rule.length else (), ("a",) * (rule.length or 1),
            (-1.0,) * (rule.length or 1)]
  raise AssertionError(rule.kind)


CASES = [(field, value) for field, rule in sorted(config_check.FIELDS.items())
         for value in bad_values(rule)]


def test_every_field_has_a_rule_and_every_rule_a_field(table_path):
  config = good_config(table_path)
  assert set(config_check.leaves(config)) == set(config_check.FIELDS) - {"table"}
  search_config = config_defaults.base_config()
  train.add_train_config(search_config)
  assert "table" in config_check.leaves(search_config)   # the training's CSV path


def test_the_good_config_and_every_shipped_config_pass(table_path):
  config = good_config(table_path)
  for mode in ("search", "describe", "train", "tabular"):
    config_check.check_config(config, mode=mode)
  shipped = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
  assert {"cifar", "digits", "minatar", "minatar_radars", "nb201_table"} <= set(shipped)
  for name in shipped:
    config = _config_file(name)
    if config.mode == "tabular":   # (its table's CSV is in ../shared, which may be absent)
      config.table.path = table_path
    config_check.check_config(config)


@pytest.mark.parametrize("field,value", CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_a_bad_value_is_one_line_naming_its_field(table_path, field, value):
  config = with_value(good_config(table_path), field, value)
  with pytest.raises(UserError) as raised:
    config_check.check_config(config)
  message = str(raised.value)
  assert message.startswith(f"config.{field}=") and "\n" not in message, message


@pytest.mark.parametrize("field", sorted(f for f, r in config_check.FIELDS.items()
                                         if r.optional and f != "memory_budget_gb"))
def test_none_is_accepted_where_optional(table_path, field):
  config_check.check_config(with_value(good_config(table_path), field, None))


def test_a_field_no_rule_knows_is_refused(table_path):
  config = good_config(table_path)
  with config.unlocked():
    config.dnas.epoch = 3          # misspelt
  with pytest.raises(UserError, match=r"config.dnas.epoch is not a radars_jax config field"):
    config_check.check_config(config)


@pytest.mark.parametrize("change,needle", [
    ({"space.ops": "sep_conv_3x3,warp_drive"}, "unknown op"),
    ({"space.name": "nb201", "space.num_ops": 6}, "space.num_ops=6"),
    ({"data.holdout_size": 1435}, "data.holdout_size=1435"),
    ({"data.batch_size": 1200}, "data.batch_size=1200 is larger"),
    ({"data.name": "synthetic", "data.train_size": 40, "data.holdout_size": 8,
      "data.batch_size": 24, "method": "darts"}, "larger than the 16"),
    ({"method": "radars"}, "memory_budget_gb"),
    ({"dnas.passes_in_loop": True}, "passes_in_loop"),
    ({"method": "rl", "supernet.scan_edges": True}, "scan_edges"),
    # (stacked edges are gone: scanned edges compile faster, in fewer bytes)
    ({"supernet.stack_edges": True}, "config.supernet.stack_edges is not a radars_jax config field"),
    # (scanned edges always recompute: a config file that still sets remat)
    ({"supernet.remat": True}, "config.supernet.remat is not a radars_jax config field"),
    ({"supernet.steps": 3}, "supernet.steps=3"),
    ({"mode": "train", "genotype": "DARTS_V9"}, "unknown genotype"),
    ({"mode": "train", "genotype": "/no/such/genotype.json"}, "unknown genotype"),
    ({"mode": "train", "train.batch_size": 5000}, "train.batch_size=5000"),
    ({"mode": "train", "genotype": "DARTS_V2", "table": "/no/such.csv"}, "config.table="),
    ({"data.name": "cifar10", "data.download": False, "data.data_dir": "/no/such/dir"},
     "no such directory"),
    ({"data.name": "cifar10", "data.archive": "/no/such/cifar-10-binary.tar.gz"},
     "config.data.archive="),
    ({"data.name": "imagenet2012", "data.manual_dir": "/no/such/dir"},
     "config.data.manual_dir="),
    ({"data.manual_dir": "/tmp"}, "data.manual_dir is for imagenet2012 only"),
    ({"data.name": "imagenette", "data.holdout_size": 9_467}, "data.holdout_size=9467"),
    ({"hardware.target": 1e5}, "method=single_darts has none"),
    ({"method": "radars", "memory_budget_gb": 1.0, "dnas.inner_mode": "first_order",
      "dnas.passes_in_loop": True, "hardware.target": 1e5}, "hardware.dnas_weight=0"),
])
def test_checks_across_fields_data_and_files(change, needle):
  config = config_defaults.base_config()
  train.add_train_config(config)
  config.data.holdout_size = 287
  for field, value in change.items():
    config = with_value(config, field, value)
  with pytest.raises(UserError, match=needle.replace(".", r"\.").replace("(", r"\(")):
    config_check.check_config(config)


def test_batch_not_divisible_by_the_devices():
  config = config_defaults.base_config()
  config.data.holdout_size = 287
  config.data.batch_size = 6     # the tests run on 4 CPU devices (conftest)
  with pytest.raises(UserError, match="not divisible by the 4 devices"):
    config_check.check_config(config)


def test_tabular_needs_its_table(table_path):
  config = config_defaults.base_config()
  config.mode = "tabular"
  with pytest.raises(UserError, match="config.table block"):
    config_check.check_config(config)
  good = good_config(table_path)
  for field, value, needle in [("table.path", "/no/such.csv", "no such file"),
                               ("table.methods", "ppo,hillclimb", "unknown method")]:
    with pytest.raises(UserError, match=needle):
      config_check.check_config(with_value(good, field, value), mode="tabular")


# ---------------------------------------------------------------------------
# The memory budget a search gets when none is set: the device's own limit
# less a margin, or none where the device reports no limit
# ---------------------------------------------------------------------------

def digits_without_budget() -> ml_collections.ConfigDict:
  config = _config_file("digits")
  config.memory_budget_gb = None
  return config


def fake_device(bytes_limit):
  stats = None if bytes_limit is None else {"bytes_limit": bytes_limit, "bytes_in_use": 0}
  return types.SimpleNamespace(memory_stats=lambda: stats)


def test_the_limit_is_the_smallest_device_s_and_none_if_any_reports_none():
  assert memory.device_memory_limit([fake_device(8e9), fake_device(6e9)]) == 6e9
  assert memory.device_memory_limit([fake_device(8e9), fake_device(None)]) is None
  # this machine's CPU devices report none
  assert memory.device_memory_limit() is None


def test_an_unset_budget_becomes_the_device_limit_less_the_margin(monkeypatch, capsys):
  monkeypatch.setattr(memory, "device_memory_limit", lambda devices=None: 20 * 10**9)
  config = digits_without_budget()
  config.method = "radars"
  memory.fill_budget_from_device(config)
  chex.assert_trees_all_close(config.memory_budget_gb, 20 * (1 - memory.DEVICE_BUDGET_MARGIN))
  assert "device's limit of 20.0 GB less 10%" in capsys.readouterr().out
  config_check.check_config(config)   # radars has its budget now
  # a budget that is set is kept; A2D and non-search modes take none
  for field, value in (("memory_budget_gb", 3.0), ("method", "a2d"), ("mode", "describe")):
    other = digits_without_budget()
    setattr(other, field, value)
    memory.fill_budget_from_device(other)
    assert other.memory_budget_gb == (3.0 if field == "memory_budget_gb" else None)


def test_radars_without_a_budget_on_a_device_without_a_limit_says_to_set_one():
  config = digits_without_budget()
  config.method = "radars"
  memory.fill_budget_from_device(config)   # the CPU: no limit
  assert config.memory_budget_gb is None
  with pytest.raises(UserError, match="set --config.memory_budget_gb=GB"):
    config_check.check_config(config)
