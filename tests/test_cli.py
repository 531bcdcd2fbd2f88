"""The command line: bad input is one line on stderr and exit status 2, and
nothing is deleted; describe prints one JSON object."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config.data.name=synthetic", "--config.data.image_size=8",
        "--config.supernet.channels=4", "--config.supernet.layers=3",
        "--config.data.batch_size=8", "--config.data.holdout_size=32"]


def run_main(*args, env_extra=None):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
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
  env.pop("XLA_FLAGS", None)
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
    (["--config=configs/digits.py", "--config.data.batch_size=0"], "config.data.batch_size=0"),
    (["--config=configs/digits.py", "--config.data.batch_size=abc"], "--config.data.batch_size"),
    (["--config=configs/digits.py", "--config.dnas.momentum=1.5"], "config.dnas.momentum=1.5"),
    (["--config=configs/digits_train.py", "--config.genotype=/no/such/genotype.json"],
     "unknown genotype"),
])
def test_bad_command_lines_exit_2_with_one_line_and_no_workdir(tmp_path, args, needle):
  workdir = tmp_path / "w"
  assert_one_error_line(run_main_args(*args, f"--workdir={workdir}"), needle)
  assert not workdir.exists()


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
                    env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 2 and "divisible" in result.stderr, result.stderr[-2000:]


def test_missing_dataset_is_one_line(tmp_path):
  result = run_main(f"--workdir={tmp_path / 'w'}", "--config.data.name=cifar10",
                    f"--config.data.data_dir={tmp_path / 'nodata'}",
                    "--config.data.download=False")
  assert result.returncode == 2, result.stderr[-2000:]
  line = [l for l in result.stderr.splitlines() if l.startswith("radars_jax: error")][0]
  assert "cifar10" in line and "tfds build" in line
  assert "Traceback" not in result.stderr


def test_describe_prints_space_and_step_bytes():
  result = run_main("--config.mode=describe", "--config.space.name=nb201",
                    "--config.supernet.cells_per_stage=1", *TINY[:2], "--config.supernet.channels=4")
  assert result.returncode == 0, result.stderr[-2000:]
  info = json.loads(result.stdout)
  assert info["num_choice_points"] == 6 and info["ops_per_choice_point"] == [5] * 6
  assert info["supernet_weights"] > 0 and info["full_space_step_bytes"] > 0

