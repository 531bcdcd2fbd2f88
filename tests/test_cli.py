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
    ("--config.data.name=imagenet42", "known datasets"),
])
def test_bad_config_values_exit_2_with_one_line(tmp_path, override, needle):
  result = run_main(f"--workdir={tmp_path / 'w'}", override)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith("radars_jax: error")]
  assert len(lines) == 1 and needle in lines[0].lower(), result.stderr[-2000:]
  assert "Traceback" not in result.stderr


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
