"""Tabular NAS-Bench-201 mode: arch strings, table loading, the query budget,
the four strategies at equal budgets, experiments/nb201_search.py and
`config.mode = "tabular"` (radars_jax.main).

Searches run on a synthetic full table (all 15,625 cells) whose metric is a
sum of per-edge op scores, so that the best cell is known and a learning
search has something to learn."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from radars_jax.tabular import run as tabular_run
from radars_jax.tabular import strategies
from radars_jax.tabular import table as table_lib
from radars_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SCORES = np.random.default_rng(0).uniform(0.0, 10.0,
                                          size=(table_lib.NUM_EDGES, table_lib.NUM_OPS))
BEST = 30.0 + float(np.sum(SCORES.max(axis=1)))


def _synthetic_value(ops) -> float:
  return 30.0 + float(sum(SCORES[e, o] for e, o in enumerate(ops)))


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
  """Every NAS-Bench-201 cell with metric `score` = 30 + sum of per-edge
  scores and report `report` = score - 1 (rows in a shuffled order)."""
  path = tmp_path_factory.mktemp("nb201") / "synthetic.csv"
  order = np.random.default_rng(1).permutation(table_lib.NUM_ARCHS)
  lines = ["arch,arch_str,score,report"]
  for i in order:
    ops = table_lib.ops_from_index(i)
    value = _synthetic_value(ops)
    lines.append(f"{i},{table_lib.arch_str_from_ops(ops)},{value:.4f},{value - 1:.4f}")
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def synthetic(synthetic_csv):
  return table_lib.load_table(str(synthetic_csv), "score", "report")


def _write(tmp_path, text, name="t.csv"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


# ---------------------------------------------------------------------------
# Arch strings and indices
# ---------------------------------------------------------------------------

def test_arch_str_round_trip():
  text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
  ops = table_lib.ops_from_arch_str(text)
  assert ops == (3, 3, 4, 1, 3, 1)
  assert table_lib.arch_str_from_ops(ops) == text
  for index in np.random.default_rng(0).integers(table_lib.NUM_ARCHS, size=50).tolist() + [
      0, table_lib.NUM_ARCHS - 1]:
    ops = table_lib.ops_from_index(index)
    assert table_lib.arch_index(ops) == index
    assert table_lib.ops_from_arch_str(table_lib.arch_str_from_ops(ops)) == ops


@pytest.mark.parametrize("bad", [
    "",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|",                 # two nodes
    "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|",               # unknown op
    "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",                   # wrong source
    "|none~0|+|none~0|+|none~0|none~1|none~2|",                          # missing edge
])
def test_malformed_arch_strings_raise(bad):
  with pytest.raises(UserError, match="not a NAS-Bench-201 arch string"):
    table_lib.ops_from_arch_str(bad)


# ---------------------------------------------------------------------------
# load_table errors
# ---------------------------------------------------------------------------

GOOD_ROW = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_load_table_reads_a_partial_table(tmp_path):
  path = _write(tmp_path, f"arch_str,val,test\n{GOOD_ROW},12.5,13.5\n")
  table = table_lib.load_table(path, "val", "test")
  assert table.num_present == 1
  assert table.metric_values[0] == 12.5 and table.report_values[0] == 13.5
  with pytest.raises(UserError, match="1 of the 15625"):   # a search needs every cell
    strategies.search_random(table, 5, 0)


@pytest.mark.parametrize("text,needle", [
    (f"arch_str,val\n{GOOD_ROW},1\n", "column 'test'"),
    (f"arch,val,test\n{GOOD_ROW},1,2\n", "column 'arch_str'"),
    ("arch_str,val,test\n|none~0|+|none~0|+|none~0|,1,2\n", "not a NAS-Bench-201 arch string"),
    (f"arch_str,val,test\n{GOOD_ROW},abc,2\n", "not both numbers"),
    (f"arch_str,val,test\n{GOOD_ROW},1,2\n{GOOD_ROW},1,2\n", "appears twice"),
    ("arch_str,val,test\n", "no rows"),
])
def test_load_table_errors(tmp_path, text, needle):
  with pytest.raises(UserError, match=needle) as info:
    table_lib.load_table(_write(tmp_path, text), "val", "test")
  assert "\n" not in str(info.value)


def test_load_table_missing_file(tmp_path):
  with pytest.raises(UserError, match="table not found"):
    table_lib.load_table(str(tmp_path / "nope.csv"), "val", "test")


# ---------------------------------------------------------------------------
# The query budget
# ---------------------------------------------------------------------------

def test_query_budget_counts_distinct_architectures_only(synthetic):
  budget = table_lib.QueryBudget(synthetic, 3)
  first = budget.lookup(7)
  assert first == pytest.approx(_synthetic_value(table_lib.ops_from_index(7)), abs=1e-4)
  assert budget.lookup(7) == first and budget.used == 1      # a repeat is free
  budget.lookup(8)
  budget.lookup(7)
  assert budget.used == 2 and not budget.exhausted
  budget.lookup(9)
  assert budget.used == 3 and budget.exhausted
  assert budget.lookup(10) is None                            # over budget: not queried
  assert budget.lookup(8) is not None                         # cached: still answered
  assert budget.order == [7, 8, 9] and budget.lookups == 6


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", strategies.METHODS)
def test_strategy_makes_exactly_q_queries_and_returns_its_best(synthetic, method):
  queries = 25
  result = strategies.run_strategy(method, synthetic, queries, seed=3)
  assert result.method == method and result.queries == queries
  assert result.samples >= queries
  assert len(result.trajectory) == queries
  assert np.all(np.diff(result.trajectory) >= 0)
  # The best of what it queried, with that architecture's report value.
  ops = table_lib.ops_from_arch_str(result.best_arch)
  chex.assert_trees_all_close(result.best_metric, _synthetic_value(ops), atol=1e-4)
  chex.assert_trees_all_close(result.best_report, result.best_metric - 1.0, atol=1e-3)
  assert result.best_metric == result.trajectory[-1]
  # Deterministic given the seed.
  again = strategies.run_strategy(method, synthetic, queries, seed=3)
  assert (again.best_arch, again.trajectory) == (result.best_arch, result.trajectory)


def test_ppo_beats_random_on_a_learnable_table(synthetic):
  queries, seeds = 60, (0, 1)
  ppo = [strategies.search_ppo(synthetic, queries, s).best_metric for s in seeds]
  rnd = [strategies.search_random(synthetic, queries, s).best_metric for s in seeds]
  # Random best of 60 is ~75 here, the optimum ~81.4; PPO gets within ~1.
  assert np.mean(ppo) > np.mean(rnd) + 2.0, (ppo, rnd)
  assert np.mean(ppo) > BEST - 2.0, (ppo, BEST)


@pytest.mark.parametrize("method", ["evolution", "reinforce"])
def test_baseline_strategy_beats_random_on_a_learnable_table(synthetic, method):
  """Evolution and REINFORCE, like PPO above, find better cells than random
  search at the same budget, averaged over seeds (deterministic per seed),
  and come near the known optimum. With REINFORCE's update sign flipped or
  evolution's tournament picking its worst, each ends below random
  (~73 against ~75.5)."""
  queries, seeds = 60, range(6)
  found = [strategies.run_strategy(method, synthetic, queries, s).best_metric for s in seeds]
  rnd = [strategies.search_random(synthetic, queries, s).best_metric for s in seeds]
  # Random best of 60 averages ~75.5 here, evolution ~79.5, REINFORCE ~80.
  assert np.mean(found) > np.mean(rnd) + 2.0, (found, rnd)
  assert np.mean(found) > BEST - 2.5, (found, BEST)


def test_stall_doubles_the_temperature_after_patience_samples_and_resets():
  stall = strategies._Stall(3)   # pylint: disable=protected-access
  temperatures = []
  for _ in range(20):         # never a new query: 2 after 3 samples, 4 after 6, ...
    stall.observe(0, 1)
    temperatures.append(stall.temperature)
  assert temperatures[:7] == [1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0]
  assert temperatures[-1] == 64.0 and max(temperatures) == 64.0   # capped at 64
  stall.observe(1, 1)         # a new query: back to 1, the count restarts
  assert (stall.temperature, stall.samples_without_new) == (1.0, 0)
  stall.observe(0, 2)
  assert stall.temperature == 1.0
  stall.observe(0, 10)        # a batch of samples counts as many (one doubling)
  assert (stall.temperature, stall.samples_without_new) == (2.0, 0)


def _stall_temperatures(new_flags, patience):
  """The temperature each sample is drawn at, by the rule of the module
  docstring, given which samples made a new query."""
  temperature, without_new, out = 1.0, 0, []
  for new in new_flags:
    out.append(temperature)
    if new:
      temperature, without_new = 1.0, 0
    else:
      without_new += 1
      if without_new >= patience:
        temperature, without_new = min(2 * temperature, 64.0), 0
  return out


def test_reinforce_samples_at_the_stall_temperature(synthetic, monkeypatch):
  """A fast-collapsing REINFORCE run (lr 1) repeats cells; each sample is
  drawn at the temperature the stall rule gives from the samples before it."""
  temperatures, new_flags = [], []
  sample = strategies._categorical_sample   # pylint: disable=protected-access
  lookup = table_lib.QueryBudget.lookup

  def recording_sample(key, logits, temperature):
    temperatures.append(float(temperature))
    return sample(key, logits, temperature)

  def recording_lookup(self, index):
    used = self.used
    value = lookup(self, index)
    new_flags.append(self.used > used)
    return value

  monkeypatch.setattr(strategies, "_categorical_sample", recording_sample)
  monkeypatch.setattr(table_lib.QueryBudget, "lookup", recording_lookup)
  strategies.search_reinforce(synthetic, 40, seed=0, lr=1.0, stall_patience=5)
  samples = len(temperatures)
  assert max(temperatures) >= 4.0, temperatures   # it stalled, more than once in a row
  assert temperatures == _stall_temperatures(new_flags[:samples], 5)


def test_unknown_method_and_bad_budget(synthetic):
  with pytest.raises(UserError, match="unknown method 'hillclimb'"):
    strategies.parse_methods("ppo,hillclimb")
  with pytest.raises(UserError, match="no methods"):
    strategies.parse_methods(" , ")
  assert strategies.parse_methods("random, ppo,random") == ("random", "ppo")
  with pytest.raises(UserError, match="--queries=0"):
    strategies.run_strategy("random", synthetic, 0, 0)
  with pytest.raises(UserError, match="--seeds=0"):
    tabular_run.compare(synthetic, "random", 5, 0)


# ---------------------------------------------------------------------------
# experiments/nb201_search.py and mode=tabular
# ---------------------------------------------------------------------------

def _load_script():
  spec = importlib.util.spec_from_file_location(
      "nb201_search", ROOT / "experiments" / "nb201_search.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_script_default_table_is_the_shared_one():
  script = _load_script()
  assert script.DEFAULT_TABLE == os.path.normpath(ROOT / ".." / "shared" / "data" /
                                                  "nb201_cifar10.csv")


@pytest.mark.parametrize("args,needle", [
    (["--metric", "nope"], "column 'nope'"),
    (["--table", "/nonexistent/table.csv"], "table not found"),
    (["--methods", "ppo,hillclimb"], "unknown method"),
])
def test_script_bad_input_is_one_line_exit_2(synthetic_csv, capsys, args, needle):
  argv = ["--table", str(synthetic_csv), "--metric", "score", "--report", "report",
          "--queries", "5", "--seeds", "1", "--no-progress"] + args
  assert _load_script().main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("nb201_search: error: ") and needle in err[0], err


def test_script_runs_and_writes_json(synthetic_csv, tmp_path):
  out = tmp_path / "results" / "nb201.json"
  env = dict(os.environ)
  # Reuse this session's compilation cache (tests above compiled the same steps).
  import jax  # pylint: disable=import-outside-toplevel
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "nb201_search.py"), "--table", str(synthetic_csv),
       "--metric", "score", "--report", "report", "--queries", "20", "--seeds", "2",
       "--json", str(out), "--no-progress"],
      capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  for method in strategies.METHODS:
    assert method in result.stdout
  payload = json.loads(out.read_text())
  assert payload["queries"] == 20 and payload["seeds"] == [0, 1]
  assert payload["metric"] == "score" and payload["report"] == "report"
  assert payload["table_best_metric"] == pytest.approx(BEST, abs=1e-3)
  assert list(payload["methods"]) == list(strategies.METHODS)
  for method, data in payload["methods"].items():
    runs = data["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["trajectory"]) == 20 and r["queries"] == 20 for r in runs)
    best = [r["best_metric"] for r in runs]
    assert data["best_metric_mean"] == pytest.approx(np.mean(best))
    assert data["best_metric_std"] == pytest.approx(np.std(best, ddof=1))
    assert payload["summary"][method]["best_report_mean"] == pytest.approx(
        np.mean([r["best_report"] for r in runs]))
    assert len(data["mean_trajectory"]) == 20


def test_main_tabular_mode(synthetic_csv, tmp_path):
  from radars_jax import main  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("nb201_table", ROOT / "configs" / "nb201_table.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.mode == "tabular"
  assert config.table.path == os.path.normpath(ROOT / ".." / "shared" / "data" /
                                               "nb201_cifar10.csv")
  assert (config.table.queries, config.table.seeds) == (100, 30)
  assert strategies.parse_methods(config.table.methods) == strategies.METHODS
  config.table.path = str(synthetic_csv)
  config.table.metric, config.table.report = "score", "report"
  config.table.queries, config.table.seeds = 20, 2
  config.table.methods = "ppo,random"
  config.progress_bar = False
  workdir = tmp_path / "w"
  summary = main.run(config, str(workdir))
  assert summary["mode"] == "tabular" and list(summary["methods"]) == ["ppo", "random"]
  assert json.loads((workdir / "summary.json").read_text())["methods"] == summary["methods"]
  results = json.loads((workdir / "tabular_results.json").read_text())
  assert [len(d["runs"]) for d in results["methods"].values()] == [2, 2]
  png = workdir / "plots" / "nb201_best_so_far.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  config.table.metric = "nope"
  with pytest.raises(UserError, match="column 'nope'"):
    main.run(config, str(tmp_path / "w2"))


# ---------------------------------------------------------------------------
# Knowledge from an earlier task (ppo_transfer)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def related_csv(tmp_path_factory):
  """A related task: the same per-edge scores, doubled and shifted, with
  noise per cell (metric `score2`)."""
  path = tmp_path_factory.mktemp("nb201_related") / "related.csv"
  noise = np.random.default_rng(5).normal(0.0, 1.0, table_lib.NUM_ARCHS)
  lines = ["arch_str,score2"]
  for i in range(table_lib.NUM_ARCHS):
    ops = table_lib.ops_from_index(i)
    lines.append(f"{table_lib.arch_str_from_ops(ops)},"
                 f"{2 * _synthetic_value(ops) - 10 + noise[i]:.4f}")
  path.write_text("\n".join(lines) + "\n")
  return path


def test_knowledge_from_a_related_task_lowers_the_queries_needed(synthetic, related_csv):
  """PPO started from the critic and policy it learned on the related task
  finds better cells in 10 queries than PPO from scratch in 30, and reaches
  the best cell where from scratch it does not."""
  source = strategies.TransferSource(table_lib.load_table(str(related_csv), "score2",
                                                          "score2"), 60)
  seeds = range(4)
  scratch = [strategies.run_strategy("ppo", synthetic, 30, s) for s in seeds]
  carried = [strategies.run_strategy("ppo_transfer", synthetic, 30, s, transfer=source)
             for s in seeds]
  assert all(r.method == "ppo_transfer" and r.queries == 30 for r in carried)
  assert (np.mean([r.trajectory[9] for r in carried])
          > np.mean([r.trajectory[-1] for r in scratch]))
  found = lambda runs: sum(r.best_metric >= BEST - 1e-3 for r in runs)  # pylint: disable=unnecessary-lambda-assignment
  assert found(carried) > found(scratch)
  with pytest.raises(UserError, match="earlier task"):
    strategies.run_strategy("ppo_transfer", synthetic, 30, 0)


def test_nb201_search_reports_ppo_transfer_beside_the_others(synthetic_csv, related_csv,
                                                             tmp_path):
  out = tmp_path / "t.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "nb201_search.py"), "--table",
       str(synthetic_csv), "--metric", "score", "--report", "report", "--queries", "15",
       "--seeds", "2", "--methods", "ppo,ppo_transfer", "--transfer-table", str(related_csv),
       "--transfer-metric", "score2", "--transfer-queries", "20", "--json", str(out),
       "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  payload = json.loads(out.read_text())
  assert set(payload["summary"]["ppo_transfer"]) == set(payload["summary"]["ppo"])
  assert payload["transfer"]["metric"] == "score2" and payload["transfer"]["queries"] == 20
  assert "ppo_transfer" in result.stdout
  missing = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "nb201_search.py"), "--table",
       str(synthetic_csv), "--metric", "score", "--report", "report", "--methods",
       "ppo_transfer"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert missing.returncode == 2 and "earlier task" in missing.stderr
