"""Reading a workdir and writing its report: `load_workdir` gathers what a
search or training left (summary, evaluation, genotype, history, metrics),
`write_report` draws every picture it allows and writes `index.html`, and
`main` is the command line (`python -m radars_jax.report WORKDIR`)."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import matplotlib

from radars_jax import distributed
from radars_jax import memory as memory_lib
from radars_jax.errors import UserError
from radars_jax.report import cells
from radars_jax.report import plots
from radars_jax.report import style

REPORT_DIR = "report"

log = logging.getLogger("radars_jax.report")   # one logger for the whole package


# --------------------------------------------------------------------------
# Reading the workdir.


@dataclasses.dataclass
class WorkdirData:
  """What a workdir holds; None (or empty) for what it does not."""
  path: Path
  summary: dict | None = None
  eval: dict | None = None
  genotype: dict | None = None
  history: list | None = None
  metrics: list = dataclasses.field(default_factory=list)  # (step, name, value)
  problems: list = dataclasses.field(default_factory=list)  # for the page


def _read_json(path: Path, required: bool, problems: list):
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    message = f"cannot read {path.name}: {e}"
    if required:
      raise UserError(f"{path}: {message}") from None
    problems.append(message)
    return None


def _read_metrics(path: Path, problems: list) -> list:
  records, bad = [], 0
  try:
    lines = path.read_text().splitlines()
  except FileNotFoundError:
    return []
  except OSError as e:
    problems.append(f"cannot read {path.name}: {e}")
    return []
  for line in lines:
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      records.append((int(record["step"]), str(record["name"]), float(record["value"])))
    except (ValueError, KeyError, TypeError):
      bad += 1  # a line cut short by a killed run, most often the last
  if bad:
    problems.append(f"{path.name}: skipped {bad} unreadable line(s)")
  return records


def load_workdir(workdir: str | os.PathLike) -> WorkdirData:
  """Reads the files of a search or training workdir (UserError if neither)."""
  path = Path(workdir).expanduser()
  if not path.is_dir():
    raise UserError(f"workdir {str(path)!r} does not exist or is not a directory")
  data = WorkdirData(path=path)
  data.summary = _read_json(path / "summary.json", True, data.problems)
  data.eval = _read_json(path / "eval.json", True, data.problems)
  if data.summary is None and data.eval is None:
    raise UserError(f"{str(path)!r} has no summary.json or eval.json: "
                    "not the workdir of a finished search or training")
  for name in ("summary", "eval"):
    if getattr(data, name) is not None and not isinstance(getattr(data, name), dict):
      raise UserError(f"{path / (name + '.json')}: expected a JSON object")
  genotype = _read_json(path / "genotype.json", False, data.problems)
  for candidate in (genotype, (data.summary or {}).get("genotype"),
                    (data.eval or {}).get("genotype")):
    if isinstance(candidate, dict):
      data.genotype = candidate
      break
  history = _read_json(path / "history.json", False, data.problems)
  if isinstance(history, dict) and isinstance(history.get("iterations"), list):
    history = history["iterations"]
  if history is not None and not isinstance(history, list):
    data.problems.append("history.json: expected a list of per-iteration objects")
    history = None
  data.history = [h for h in history if isinstance(h, dict)] if history else None
  data.metrics = _read_metrics(path / "metrics.jsonl", data.problems)
  return data


# --------------------------------------------------------------------------
# The page.


def _format_value(key: str, value) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (int, float)) and not math.isfinite(float(value)):
    return str(value)
  if key.endswith("_bytes") and isinstance(value, (int, float)):
    return f"{value / style.GB:.3f} GB ({int(value):,} bytes)"
  if key.endswith("seconds") and isinstance(value, (int, float)):
    text = f"{value:.1f} s"
    if value >= 60:
      text += f" ({datetime.timedelta(seconds=round(value))})"
    return text
  if "accuracy" in key and isinstance(value, float) and 0.0 <= value <= 1.0:
    return f"{value * 100:.2f} %"
  if key in ("weights", "flops", "supernet_weights", "params") and isinstance(value, int):
    return f"{value:,} ({value / 1e6:.2f} M)"
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, int):
    return f"{value:,}" if abs(value) >= 10000 else str(value)
  return str(value)


def _scalar_rows(data: dict) -> list[tuple[str, str]]:
  rows = []
  for key, value in data.items():
    if value is None or isinstance(value, (bool, int, float, str)):
      rows.append((key, _format_value(key, value)))
  if isinstance(data.get("choice_points"), list):
    rows.append(("choice points", str(len(data["choice_points"]))))
  if isinstance(data.get("space_ops"), list):
    rows.append(("space ops", f"{len(data['space_ops'])}: {', '.join(map(str, data['space_ops']))}"))
  return rows


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #202020; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.key { font-family: monospace; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; border-radius: 4px; }
figure { margin: 1.2em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #444; font-size: 0.95em; margin-top: 0.3em; }
.problems { color: #8a4b00; }
"""


def _html_table(headers: tuple[str, ...], rows: list[tuple], key_column: bool = False) -> str:
  """An HTML table; cells are escaped (`key_column`: the first styled as a key)."""
  def cell(i: int, value) -> str:
    attr = " class='key'" if key_column and i == 0 else ""
    return f"<td{attr}>{html.escape(str(value))}</td>"

  head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
  body = "\n".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
  return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _table(rows: list[tuple[str, str]]) -> str:
  return _html_table(("key", "value"), rows, key_column=True)


def _compiles_table(compiles: list) -> str:
  """RADARS' train-step compiles (summary.json `compiles`), one row each."""
  rows = [(c.get("what", "?"),
           "-" if c.get("bytes") is None else memory_lib.format_gb(c["bytes"]),
           f"{c.get('compile_seconds', 0.0):.1f} s", f"{c.get('waited_seconds', 0.0):.1f} s",
           "background" if c.get("ahead") else "the loop") for c in compiles]
  return _html_table(("compiled", "XLA bytes", "compile", "the search waited", "compiled in"),
                     rows)


def _runs_table(runs: list) -> str:
  """RADARS' subspace runs (summary.json `subspace_runs`), one row each:
  the score, how clearly its alphas decided (`spaces.decision_margins`)
  and where its weights came from (the weight pool)."""
  rows = []
  for r in runs:
    hits, fresh = r.get("pool_hits"), r.get("pool_misses")
    inherited = sum((r.get("pool_inherited") or {}).values())
    total = (hits or 0) + (fresh or 0) + inherited
    rows.append((r.get("iteration", "?"), "" if r.get("sample") is None else r["sample"],
                 "/".join(map(str, r.get("ops_per_choice_point", []))),
                 "" if r.get("reward") is None else f"{r['reward']:.4f}",
                 "-" if r.get("decision_margin") is None else f"{r['decision_margin']:.3f}",
                 "-" if r.get("compiled_bytes") is None
                 else memory_lib.format_gb(r["compiled_bytes"]),
                 "-" if hits is None else f"{hits} / {inherited} / {fresh}",
                 "-" if not total else f"{(hits + inherited) / total:.0%}",
                 ", ".join(f"{k} {v}" for k, v in (r.get("pool_inherited") or {}).items())))
  return _html_table(("iteration", "sample", "ops per choice point", "reward",
                      "decision margin (median)", "step bytes",
                      "pool: trained / inherited / fresh", "from trained weights",
                      "inherited from"), rows)


def _figures(items: list[tuple[Path, str]]) -> str:
  parts = []
  for path, caption in items:
    name = html.escape(path.name)
    size = ""
    try:  # shown at 96 px per inch: every picture's text at its point size
      header = path.read_bytes()[:24]
      width = int.from_bytes(header[16:20], "big")
      size = f" width='{round(width * 96 / style.DPI)}'" if header[:4] == b"\x89PNG" else ""
    except OSError:
      pass
    parts.append(f"<figure><a href='{name}'><img src='{name}'{size} "
                 f"alt='{html.escape(caption)}'>"
                 f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")
  return "\n".join(parts)


def _write_html(data: WorkdirData, sections: list[tuple[str, list]], outdir: Path) -> Path:
  summary, ev = data.summary or {}, data.eval or {}
  if data.summary is not None:
    kind = "search"
    what = " ".join(str(x) for x in (summary.get("method"), "on",
                                     summary.get("space"), "/", summary.get("dataset"))
                    if x is not None)
  else:
    kind, what = "training", str(ev.get("dataset", "") or "")
  title = f"radars_jax {kind} report" + (f": {what}" if what.strip(" /on") else "")
  now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  out = ["<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
         f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{html.escape(title)}</h1>",
         f"<p class='meta'>Workdir <code>{html.escape(str(data.path.resolve()))}</code>; "
         f"report written {now}.</p>"]
  if data.summary is not None:
    out += ["<h2>Search summary</h2>", _table(_scalar_rows(summary))]
    if isinstance(summary.get("compiles"), list) and summary["compiles"]:
      try:
        out += ["<h2>Train-step compiles</h2>", _compiles_table(summary["compiles"])]
      except (AttributeError, TypeError, ValueError) as e:
        data.problems.append(f"compiles table: {type(e).__name__}: {e}")
    if isinstance(summary.get("subspace_runs"), list) and summary["subspace_runs"]:
      try:
        out += ["<h2>Subspace runs</h2>", _runs_table(summary["subspace_runs"])]
      except (AttributeError, TypeError, ValueError) as e:
        data.problems.append(f"subspace runs table: {type(e).__name__}: {e}")
  if data.eval is not None:
    out += ["<h2>Evaluation (retraining)</h2>", _table(_scalar_rows(ev))]
  if data.genotype is not None:
    out += ["<h2>Genotype</h2>"]
    try:
      out.append(f"<pre>{html.escape(cells.genotype_text(data.genotype))}</pre>")
    except (KeyError, ValueError, TypeError):
      pass
    out.append(f"<pre>{html.escape(json.dumps(data.genotype))}</pre>")
  for heading, items in sections:
    if items:
      out += [f"<h2>{html.escape(heading)}</h2>", _figures(items)]
  if data.problems:
    out += ["<h2>Not drawn</h2><ul class='problems'>"]
    out += [f"<li>{html.escape(p)}</li>" for p in data.problems]
    out += ["</ul>"]
  out.append("</body></html>\n")
  path = outdir / "index.html"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("\n".join(out), encoding="utf-8")
  os.replace(tmp, path)
  return path


def _attempt(data: WorkdirData, what: str, fn, *args) -> list:
  """Runs one drawing; malformed data becomes a line on the page, not a crash."""
  try:
    result = fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    log.warning("report: cannot draw %s: %s: %s", what, type(e).__name__, e)
    data.problems.append(f"{what}: {type(e).__name__}: {e}")
    return []
  if result is None:
    return []
  return result if isinstance(result, list) else [result]


def write_report(workdir: str | os.PathLike) -> Path:
  """Writes WORKDIR/report/ (PNGs and index.html); returns the report dir.
  In a run of several processes only process 0 writes it."""
  if not distributed.is_primary():
    return Path(workdir) / REPORT_DIR
  data = load_workdir(workdir)
  outdir = data.path / REPORT_DIR
  try:
    outdir.mkdir(exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {outdir}: {e.strerror}") from None
  sections = []
  with matplotlib.rc_context(style.STYLE):
    if data.genotype is not None:
      sections.append(("Found cell", _attempt(data, "cell drawing", cells.draw_genotype,
                                               data.genotype, outdir)))
    if data.summary is not None and data.summary.get("alphas"):
      path = outdir / "alphas.png"
      sections.append(("Architecture weights", [
          (p, "softmax(α) of every choice point over the ops of the final DNAS subspace "
              "(the genotype keeps, per node, the two edges with the strongest non-none op).")
          for p in _attempt(data, "alpha heatmap", plots.plot_alphas, data.summary, path)]))
    if data.summary is not None and data.summary.get("agents"):
      sections.append(("Agents", [
          (p, "Mean return (bars: std over the episodes) against multiply-adds per "
              "observation of the teacher and of the searched and hand-designed agents.")
          for p in _attempt(data, "agents plot", plots.plot_agents, data.summary,
                            outdir / "agents.png")]))
    if data.metrics:
      heading = "Search curves" if data.summary is not None else "Training curves"
      sections.append((heading, _attempt(data, "metric curves", plots.plot_metrics,
                                         data.metrics, outdir)))
    if data.history:
      sections.append(("RADARS controller", _attempt(data, "RADARS history",
                                                     plots.plot_history, data.history,
                                                     data.summary, outdir)))
  _write_html(data, sections, outdir)
  return outdir


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m radars_jax.report WORKDIR`: prints the page's path; 2 on a
  `UserError` (its one line on stderr)."""
  parser = argparse.ArgumentParser(
      prog="python -m radars_jax.report",
      description="Writes WORKDIR/report/: cell drawings, alpha heatmaps, curves, index.html.")
  parser.add_argument("workdir", help="a search or training workdir")
  args = parser.parse_args(argv)
  try:
    outdir = write_report(args.workdir)
  except UserError as e:
    print(f"radars_jax.report: error: {e}", file=sys.stderr)
    return 2
  print(outdir / "index.html")
  return 0

