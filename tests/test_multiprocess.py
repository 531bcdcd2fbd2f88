"""One search over two processes (`radars_jax.distributed`): two processes
on 127.0.0.1, each with 2 forced CPU devices, run a small digits RADARS
quickstart as one run of 4 devices. Killed (one process with SIGKILL, then
the other, as a job scheduler ends a job that lost a process) and started
again, they resume from the checkpoint and end with the genotype of one
process with 4 devices; only process 0 writes the workdir's logs."""
import json
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import conftest
from radars_jax import config_defaults
from radars_jax import distributed
from radars_jax import metrics as metrics_lib
from radars_jax import report
from radars_jax import workdir as workdir_lib
from radars_jax.errors import UserError
from test_radars import ROOT, subprocess_env

FLAGS = [f"--config={ROOT / 'configs' / 'digits.py'}", "--config.progress_bar=False",
         "--config.memory_budget_gb=0.003",   # (4 devices: the whole space's 3.4 MB over it)
         "--config.radars.max_iterations=1", "--config.controller.samples_per_iteration=2",
         "--config.radars.subspace_epochs=0.3", "--config.dnas.epochs=1",
         "--config.dnas.derived_finetune_steps=0"]
TIMEOUT = 240


def env_with_devices(n: int) -> dict:
  env = subprocess_env()
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={n} "
                      f"{conftest.ONE_DEVICE_XLA_FLAGS}")
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, log_dir, tag: str) -> list[subprocess.Popen]:
  """The two processes of one run, their output in `log_dir`/`tag`.pN.log."""
  port = free_port()
  procs = []
  for i in range(2):
    log = open(log_dir / f"{tag}.p{i}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "radars_jax.main", f"--workdir={workdir}", *FLAGS,
         f"--config.distributed.coordinator=127.0.0.1:{port}",
         "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
        cwd=ROOT, env=env_with_devices(2), stdout=log, stderr=subprocess.STDOUT))
  return procs


def wait_all(procs, timeout: float) -> list[int]:
  deadline = time.monotonic() + timeout
  try:
    return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def search_steps(workdir) -> list[int]:
  directory = workdir / "checkpoints" / "search"
  return [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() \
      else []


def test_two_processes_search_as_one_and_resume_after_a_sigkill(tmp_path):
  reference = tmp_path / "one_process"
  result = subprocess.run([sys.executable, "-m", "radars_jax.main", f"--workdir={reference}",
                           *FLAGS], cwd=ROOT, env=env_with_devices(4), capture_output=True,
                          text=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  ref = json.loads((reference / "summary.json").read_text())
  assert ref["iterations"] == 1 and ref["devices"] == 4

  workdir = tmp_path / "two_processes"
  procs = launch(workdir, tmp_path, "killed")
  deadline = time.monotonic() + TIMEOUT
  while not search_steps(workdir) and time.monotonic() < deadline:
    assert all(p.poll() is None for p in procs), (tmp_path / "killed.p0.log").read_text()[-3000:]
    time.sleep(0.2)
  assert search_steps(workdir), "no search checkpoint in time"
  procs[1].kill()     # SIGKILL
  procs[1].wait()
  procs[0].kill()     # (the scheduler ends the job; alone it would wait for its peer)
  procs[0].wait()
  assert not (workdir / "summary.json").exists()

  procs = launch(workdir, tmp_path, "resumed")
  codes = wait_all(procs, TIMEOUT)
  logs = [(tmp_path / f"resumed.p{i}.log").read_text() for i in range(2)]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  assert all("radars_jax: resuming radars search" in log for log in logs)
  assert "process 1 of 2, 2 of 4 devices here" in logs[1]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["devices"] == 4 and summary["iterations"] == 1
  assert summary["genotype"] == ref["genotype"]
  assert summary["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1e-6)


def test_only_process_0_writes_the_workdir(tmp_path, monkeypatch):
  """In every other process the JSON files, metrics and report are not
  written (the search's checkpoints are written by all, through orbax)."""
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir_lib.write_json(tmp_path / "summary.json", {"a": 1})
  writer = metrics_lib.MetricWriter(tmp_path / "tensorboard", tmp_path / "metrics.jsonl")
  writer.scalars(1, {"loss": 0.5})
  writer.close()
  report.write_report(tmp_path)
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  workdir_lib.write_json(tmp_path / "summary.json", {"a": 1})
  assert (tmp_path / "summary.json").exists()


def test_distributed_settings_are_checked():
  config = config_defaults.base_config()
  config.distributed.coordinator = "127.0.0.1:1234"
  with pytest.raises(UserError, match="num_processes"):
    distributed.initialize(config)
  config.distributed.update(num_processes=2, process_id=2)
  with pytest.raises(UserError, match="process_id=2 must be in 0..1"):
    distributed.initialize(config)


GATHER = """
import sys
import numpy as np
from radars_jax import config_defaults, data, distributed
config = config_defaults.base_config()
config.distributed.update(coordinator=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
distributed.initialize(config)
i = int(sys.argv[2])
rows = np.arange(3 * (3 + i), dtype=np.uint8).reshape(3 + i, 3) + 100 * i
print("GATHERED", data.gather_from_processes(rows).tolist(), flush=True)
"""


def test_processes_join_the_parts_of_a_dataset_they_read(tmp_path):
  """`data.gather_from_processes` (CIFAR: each process reads its part of
  the split from tfds) on two processes with parts of 3 and 4 rows."""
  address = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", GATHER, address, str(i)], cwd=ROOT,
                            env=env_with_devices(1), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  expected = np.concatenate([np.arange(9).reshape(3, 3), np.arange(12).reshape(4, 3) + 100])
  for out, p in zip(outputs, procs):
    assert p.returncode == 0, out[-2000:]
    line = next(l for l in out.splitlines() if l.startswith("GATHERED"))
    assert json.loads(line[len("GATHERED "):]) == expected.tolist()
