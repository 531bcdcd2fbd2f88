"""experiments/colab_tpu.ipynb runs top to bottom in its small CPU mode
(RADARS_SMALL=1): a search and a retrain, data-parallel over the 4 CPU
devices, with their reports shown."""
import importlib.util
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "colab_tpu.ipynb"


def test_notebook_is_stored_clean_with_a_parameters_cell():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
  params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  for name in ("SMALL", "REPO_URL", "RADARS_SMALL", "WORKDIR", "USE_DRIVE"):
    assert name in params[0].source, name

def test_notebook_search_is_radars_and_its_alternative_a_valid_darts_config():
  """The search cell runs RADARS with the parameters' budget (None on a TPU:
  the core's own limit); its commented lines (the whole-space alternative),
  uncommented, give a single_darts search that passes the config check."""
  from radars_jax import config_check  # pylint: disable=import-outside-toplevel
  from radars_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  nb = nbformat.read(NOTEBOOK, as_version=4)
  (cell,) = [c for c in nb.cells if c.cell_type == "code"
             and 'config.method = "radars"' in c.source]
  lines = cell.source.splitlines()
  active = [l for l in lines if l.startswith(("config.method =", "config.memory_budget_gb ="))]
  alternative = [l[2:] for l in lines if l.startswith("# config.")]
  spec = importlib.util.spec_from_file_location("cifar", NOTEBOOK.parents[1] / "configs" /
                                                "cifar.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()   # what the cell loads: load_config("cifar")
  config.mode = "search"
  for line in active:
    exec(line, {"config": config, "SEARCH": {"budget_gb": 0.008}})   # pylint: disable=exec-used
  assert (config.method, config.memory_budget_gb) == ("radars", 0.008)
  config_check.check_config(config)
  config.memory_budget_gb = None   # (on a CPU, which reports no limit, RADARS needs one)
  with pytest.raises(UserError, match="memory budget"):
    config_check.check_config(config)
  for line in alternative:
    exec(line, {"config": config})   # pylint: disable=exec-used
  assert config.method == "single_darts" and config.memory_budget_gb is None, alternative
  config_check.check_config(config)


def test_notebook_runs_small_on_cpu(tmp_path, monkeypatch):
  monkeypatch.setenv("RADARS_SMALL", "1")
  monkeypatch.setenv("RADARS_WORKDIR", str(tmp_path))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # raises CellExecutionError on the first failing cell

  search, train = tmp_path / "search", tmp_path / "train"
  for path in (search / "summary.json", search / "genotype.json", train / "eval.json",
               search / "report" / "index.html", train / "report" / "index.html"):
    assert path.is_file(), path
  summary = json.loads((search / "summary.json").read_text())
  result = json.loads((train / "eval.json").read_text())
  assert summary["method"] == "radars" and summary["dataset"] == "cifar10"
  assert summary["over_budget_steps"] == 0 and summary["iterations"] == 1
  assert summary["devices"] == result["devices"] == 4   # data-parallel over 4 CPU devices
  assert result["genotype"] == summary["genotype"]      # the searched cell was retrained
  assert 0.0 <= result["test_accuracy"] <= 1.0

  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  pngs = list((search / "report").glob("*.png")) + list((train / "report").glob("*.png"))
  assert len(images) == len(pngs) >= 4
  text = "".join(o.get("text", "") for o in outputs)
  assert "4 cpu device(s)" in text
