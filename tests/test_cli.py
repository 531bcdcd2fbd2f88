"""The command line: bad input is one line on stderr and exit status 2, and
nothing is deleted; describe prints one JSON object."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

from radars_jax.nas import spaces
from radars_jax.nas import supernet

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config.data.name=synthetic", "--config.data.image_size=8",
        "--config.supernet.channels=4", "--config.supernet.layers=3",
        "--config.data.batch_size=8", "--config.data.holdout_size=32"]


def run_main(*args, env_extra=None):
  env = dict(os.environ)
  env["XLA_FLAGS"] = conftest.ONE_DEVICE_XLA_FLAGS
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "radars_jax.main",
                         f"--config={ROOT / 'configs' / 'digits.py'}", *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.mark.parametrize("override,needle", [
    ("--config.space.ops=sep_conv_3x3,warp_drive", "unknown op"),
    ("--config.space.name=galaxy", "unknown space"),
    ("--config.method=hillclimb", "unknown method"),
    ("--config.data.name=imagenet42", "unknown dataset"),
])
def test_bad_config_values_exit_2_with_one_line(tmp_path, override, needle):
  result = run_main(f"--workdir={tmp_path / 'w'}", override)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith("radars_jax: error")]
  assert len(lines) == 1 and needle in lines[0].lower(), result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def run_main_args(*args):
  env = dict(os.environ)
  env["XLA_FLAGS"] = conftest.ONE_DEVICE_XLA_FLAGS
  return subprocess.run([sys.executable, "-m", "radars_jax.main", *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def assert_one_error_line(result, needle):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith("radars_jax: error: ") and needle in lines[0], lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--config=configs/does_not_exist.py"], "configs/does_not_exist.py: no such file"),
    (["--config=configs/digits.py", "--config.genotype=DARTS_V2"], "has no field 'genotype'"),
    (["--config=configs/digits_darts.py", "--config.supernet.remat=True"],
     "has no field 'remat'"),   # (removed: scanned edges always recompute)
    (["--config=configs/digits.py", "--config.data.batch_size=0"], "config.data.batch_size=0"),
    (["--config=configs/digits.py", "--config.data.batch_size=abc"], "--config.data.batch_size"),
    (["--config=configs/digits.py", "--config.dnas.momentum=1.5"], "config.dnas.momentum=1.5"),
    (["--config=configs/digits.py", "--config.data.batch_size=None"],
     "config.data.batch_size=None"),
    (["--config=configs/digits.py", "--config.nope=None"], "config.nope"),
    (["--config=configs/digits_train.py", "--config.genotype=/no/such/genotype.json"],
     "unknown genotype"),
])
def test_bad_command_lines_exit_2_with_one_line_and_no_workdir(tmp_path, args, needle):
  workdir = tmp_path / "w"
  assert_one_error_line(run_main_args(*args, f"--workdir={workdir}"), needle)
  assert not workdir.exists()


def test_an_optional_field_a_config_file_sets_is_unset_with_none():
  """`--config.a.b=None` (absl's parsers take only values of the field's
  type): configs/imagenet_mobile.py aims its search at a latency, and
  whole-space Single-DARTS takes no target."""
  result = run_main_args("--config=configs/imagenet_mobile.py", "--config.mode=describe",
                         "--config.method=single_darts", "--config.hardware.target=None",
                         "--config.memory_budget_gb=None", "--config.space.blocks=1,1,1,1,1,1",
                         "--config.space.ops=mbconv_3x3_e3,none", *TINY)   # (a small step to compile)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout)["memory_budget_bytes"] is None


def test_bad_input_found_late_leaves_an_existing_workdir_as_it_was(tmp_path):
  """A budget no whole-space step fits is found after compiling it: what the
  run wrote is taken back, the user's files stay."""
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  (workdir / "config.json").write_text('{"from": "an earlier run"}')
  result = run_main(f"--workdir={workdir}", *TINY, "--config.method=darts",
                    "--config.memory_budget_gb=0.0001", "--config.progress_bar=False")
  assert_one_error_line(result, "needs")
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json", "notes.txt"]
  assert (workdir / "config.json").read_text() == '{"from": "an earlier run"}'


def test_workdir_that_is_a_file_is_refused_and_kept(tmp_path):
  target = tmp_path / "precious.txt"
  target.write_text("keep me")
  result = run_main(f"--workdir={target}", *TINY)
  assert result.returncode == 2 and "not a directory" in result.stderr
  assert target.read_text() == "keep me"


def test_batch_not_divisible_by_devices(tmp_path):
  result = run_main(f"--workdir={tmp_path / 'w'}", *TINY[:-2], "--config.data.batch_size=6",
                    "--config.data.holdout_size=32",
                    env_extra={"XLA_FLAGS": os.environ["XLA_FLAGS"]})   # four devices
  assert result.returncode == 2 and "divisible" in result.stderr, result.stderr[-2000:]


def test_missing_dataset_is_one_line(tmp_path):
  result = run_main(f"--workdir={tmp_path / 'w'}", "--config.data.name=cifar10",
                    f"--config.data.data_dir={tmp_path / 'nodata'}",
                    "--config.data.download=False")
  assert result.returncode == 2, result.stderr[-2000:]
  line = [l for l in result.stderr.splitlines() if l.startswith("radars_jax: error")][0]
  assert "cifar10" in line and "--config.data.archive" in line
  assert "Traceback" not in result.stderr


def test_archive_that_is_not_a_file_is_one_line(tmp_path):
  result = run_main(f"--workdir={tmp_path / 'w'}", "--config.data.name=cifar10",
                    f"--config.data.archive={tmp_path / 'cifar-10-binary.tar.gz'}")
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("radars_jax: error")]
  assert len(lines) == 1 and "data.archive" in lines[0] and "not a file" in lines[0]
  assert "Traceback" not in result.stderr


def test_describe_prints_space_and_step_bytes():
  result = run_main("--config.mode=describe", "--config.space.name=nb201",
                    "--config.supernet.cells_per_stage=1", *TINY[:2], "--config.supernet.channels=4")
  assert result.returncode == 0, result.stderr[-2000:]
  info = json.loads(result.stdout)
  assert info["num_choice_points"] == 6 and info["ops_per_choice_point"] == [5] * 6
  assert info["supernet_weights"] > 0 and info["full_space_step_bytes"] > 0
  # The weights counted here from the supernet's own init (shapes only), and
  # a step holds at least its float32 weights and their momentum.
  spec = importlib.util.spec_from_file_location("digits", ROOT / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.supernet.cells_per_stage, config.supernet.channels = 1, 4
  space = spaces.make_space("nb201")
  model = supernet.build_supernet(space, space.full_subspace(), config.supernet,
                                  info["num_classes"])
  alphas = tuple(jnp.zeros(5) for _ in range(6))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), alphas))
  weights = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))
  assert info["image_shape"] == [8, 8, 3] and info["supernet_weights"] == weights
  assert info["full_space_step_bytes"] >= 2 * 4 * weights


def labelled(stdout: str) -> dict:
  """`{"genotype": "...", "accuracy": "...", ...}` from the summary's lines."""
  out = {}
  for line in stdout.strip().splitlines()[1:]:
    label, _, text = line.strip().partition(" ")
    out[label] = text.strip()
  return out


def test_a_finished_search_prints_a_short_summary_and_a_rerun_loads_its_programs(tmp_path):
  """The console: what `auto` picked, then a few lines for a person. The
  compiled programs go to the cache shared by every run (not the workdir):
  the same command in another workdir loads them instead of compiling."""
  flags = [*TINY, "--config.method=single_darts", "--config.dnas.epochs=1",
           "--config.dnas.derived_finetune_steps=0", "--config.memory_budget_gb=0.5",
           "--config.progress_bar=False", "--config.data.train_size=64",
           "--config.data.test_size=16"]
  cache = tmp_path / "cache"
  workdir = tmp_path / "w"
  # (XLA's own settings, as a user's run compiles: the suite's compile
  # faster, and more of the small programs fall under the cache's threshold)
  env = {"RADARS_JAX_CACHE_DIR": str(cache), "XLA_FLAGS": ""}
  result = run_main(f"--workdir={workdir}", *flags, env_extra=env)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads((workdir / "summary.json").read_text())
  lines = result.stdout.strip().splitlines()
  assert lines[0] == ("radars_jax: on cpu, method=single_darts: supernet.depthwise_impl=shifted, "
                      "supernet.scan_edges=True, supernet.compute_dtype=float32 "
                      "(auto; docs/performance.md)")
  assert lines[1] == "radars_jax: single_darts search on nb201 / synthetic finished (DNAS: single_level)"
  assert len(lines) <= 9 and "{" not in result.stdout, result.stdout
  fields = labelled(result.stdout)
  assert fields["genotype"] == summary["genotype"]["arch_str"]
  assert fields["accuracy"].startswith(f"{100 * summary['val_accuracy']:.2f}% ")
  step = summary["step_bytes"] / 1e6
  assert fields["memory"] == f"worst train step {step:.1f} MB, budget 0.5 GB"
  assert fields["time"].startswith(f"search {summary['search_seconds']:.1f} s, ")
  assert fields["outputs"] == f"{workdir}/report/index.html, {workdir}/summary.json"
  assert (workdir / "report" / "index.html").is_file()
  # (the train step at least; how many of the small programs pass the
  # cache's 0.1 s threshold depends on how fast the machine compiles them)
  assert len(list(cache.iterdir())) >= 1 and not (workdir / "jax_cache").exists()
  again = tmp_path / "again"
  result = run_main(f"--workdir={again}", *flags, env_extra=env)
  assert result.returncode == 0, result.stderr[-2000:]
  rerun = json.loads((again / "summary.json").read_text())
  assert rerun["genotype"] == summary["genotype"]
  first, second = (s["compile_breakdown_seconds"]["xla"] for s in (summary, rerun))
  assert second < 0.25 * first, (first, second)


def test_summaries_of_radars_training_and_tabular_runs():
  from radars_jax.nas import genotypes
  from radars_jax import main  # pylint: disable=import-outside-toplevel
  radars_result = {
      "method": "radars", "mode": "single_level", "space": "nb201", "dataset": "digits",
      "genotype": {"space": "nb201", "ops": ["none"] * 6, "arch_str": "|none~0|+|...|"},
      "val_accuracy": 0.9547, "step_bytes": 9_200_736, "memory_budget_bytes": 9.5e6,
      "over_budget_steps": 0, "iterations": 2, "subspace_runs": [{}] * 9,
      "shared_program_runs": 8, "search_seconds": 123.6, "compile_loop_seconds": 79.0,
      "compile_seconds": 82.6}
  fields = labelled(main.console_summary("search", radars_result, "runs/d"))
  assert fields == {
      "genotype": "|none~0|+|...|",
      "accuracy": "95.47% on the held-out training examples (the derived cell, supernet weights)",
      "memory": "worst train step 9.2 MB, budget 9.5 MB, 0 steps over it",
      "search": "2 iterations, 9 DNAS runs (8 on a shared program)",
      "time": "search 123.6 s, 79.0 s of it compiling or waiting for compiles",
      "outputs": "runs/d/report/index.html, runs/d/summary.json"}
  trained = {"network": "darts", "dataset": "digits", "epochs": 15, "steps": 330,
             "genotype": genotypes.DARTS_V2, "test_accuracy": 0.9722, "weights": 3349342,
             "flops": 528_000_000, "seconds": 31.25, "resumed_from_step": 100}
  fields = labelled(main.console_summary("train", trained, "runs/t"))
  assert fields["genotype"].startswith("normal: sep_conv_3x3 0, sep_conv_3x3 1 | ")
  assert "; reduce: max_pool_3x3 0, max_pool_3x3 1 | " in fields["genotype"]
  assert fields["accuracy"] == "97.22% on the test split"
  assert fields["network"] == "3,349,342 weights, 528,000,000 multiply-adds per image"
  assert fields["time"] == "31.2 s (resumed from step 100)"
  assert fields["outputs"] == "runs/t/report/index.html, runs/t/eval.json"
  tabular = {"seeds": 30, "queries": 100, "table": "t.csv", "metric": "val", "report": "test",
             "table_best_metric": 84.892, "plot": "runs/n/plots/p.png",
             "results": "runs/n/tabular_results.json",
             "methods": {"ppo": {"best_metric_mean": 84.545, "best_metric_std": 0.393,
                                 "best_report_mean": 88.668}}}
  lines = main.console_summary("tabular", tabular, "runs/n").splitlines()
  assert lines[1].split() == ["ppo", "best", "val", "84.545", "+-", "0.393,", "its", "test",
                              "88.668"]
  assert lines[2].strip() == ("outputs   runs/n/plots/p.png, runs/n/summary.json, "
                              "runs/n/tabular_results.json")
