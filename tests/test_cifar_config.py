"""configs/cifar.py's own path (RADARS on darts_large cells, first-order
DARTS, scanned switched cells, a memory budget) at a tiny setting: one iteration and the final search end to end,
no compiled step over the budget or over `dnas.max_program_ops`."""
import importlib.util
from pathlib import Path

from radars_jax import main as main_lib
from radars_jax import search
from radars_jax import workdir as workdir_lib

ROOT = Path(__file__).resolve().parents[1]


def cifar_config():
  spec = importlib.util.spec_from_file_location("cifar_config", ROOT / "configs" / "cifar.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_cifar_config_runs_an_iteration_within_budget_and_program_size(tmp_path):
  config = cifar_config()
  assert (config.method, config.space.name, config.dnas.inner_mode) == (
      "radars", "darts_large", "first_order")
  assert config.supernet.scan_switched and config.dnas.max_program_ops
  config.progress_bar = False
  config.data.name = "synthetic"
  config.data.image_size = 8
  config.data.train_size = 64
  config.data.test_size = 16
  config.data.holdout_size = 16
  config.data.batch_size = 8
  config.data.eval_batch_size = 16
  config.space.num_ops = 5          # none, the two pools, skip, sep_conv_3x3
  config.supernet.channels = 4
  config.supernet.layers = 1           # one (reduction) cell: its two scans
  config.radars.max_iterations = 1
  config.radars.subspace_epochs = 0.5
  config.radars.final_epochs = 0.5
  config.controller.samples_per_iteration = 2
  full = config.copy_and_resolve_references()
  full.method = "darts"
  full.memory_budget_gb = None
  full_bytes = search.describe(full)["full_space_step_bytes"]
  config.memory_budget_gb = 0.7 * full_bytes / 1e9   # the whole space does not fit
  config.radars.budget_margin = 0.0
  summary = main_lib.run(config, workdir_lib.prepare(tmp_path / "run"))
  budget = summary["memory_budget_bytes"]
  assert summary["mode"] == "first_order" and summary["over_budget_steps"] == 0
  assert summary["iterations"] == 1 and summary["genotype"]
  assert summary["shared_program_runs"] == 2   # both samples on the shared program
  for c in summary["compiles"]:
    assert c["bytes"] <= budget or "calibration" in c["what"], c
    assert 0 < c["ops"] <= config.dnas.max_program_ops, c
  assert (tmp_path / "run" / "summary.json").exists()
  assert (tmp_path / "run" / "report" / "index.html").exists()
