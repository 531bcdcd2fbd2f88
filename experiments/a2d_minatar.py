"""A2D against its baselines on MinAtar games over seeds: mean return (+- std
over seeds), multiply-adds, weights and wall time of the teacher, the small
hand-designed agent, plain DNAS and A2D, and whether A2D's claims hold.

    python experiments/a2d_minatar.py --games Breakout-MinAtar,Asterix-MinAtar,SpaceInvaders-MinAtar \\
        --seeds 0,1,2 --workdir runs/a2d_minatar --json experiments/results/a2d_minatar.json

Each (game, seed) is `python -m radars_jax.main --config configs/minatar.py`
with that game and seed in WORKDIR/GAME/SEED (`--set agents.FIELD=VALUE`
changes the config for every run): a run that finished is read back, a
killed one resumes. Prints a markdown table, writes --json and a PNG of
return against multiply-adds (one panel a game) beside it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("teacher", "small", "dnas", "a2d")
LABELS = {"teacher": "teacher", "small": "small hand-designed", "dnas": "plain DNAS",
          "a2d": "A2D"}


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="a2d_minatar", description=__doc__.split("\n")[0])
  parser.add_argument("--games", default="Breakout-MinAtar,Asterix-MinAtar,SpaceInvaders-MinAtar")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", type=Path, default=Path("runs/a2d_minatar"))
  parser.add_argument("--set", action="append", default=[], metavar="agents.FIELD=VALUE",
                      help="a config override for every run (repeatable)")
  parser.add_argument("--json", type=Path, default=None)
  return parser.parse_args(argv)


def minatar_config():
  spec = importlib.util.spec_from_file_location("minatar", ROOT / "configs" / "minatar.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def apply_override(config, text: str) -> None:
  """`a.b=value` with the value parsed as the field's type."""
  name, _, value = text.partition("=")
  *blocks, field = name.split(".")
  block = config
  for b in blocks:
    block = block[b]
  current = block[field]
  if isinstance(current, bool):
    block[field] = value.lower() in ("1", "true", "yes")
  elif isinstance(current, (int, float)):
    block[field] = type(current)(value)
  else:
    block[field] = value


def run_one(game: str, seed: int, workdir: Path, overrides) -> dict:
  """One A2D run (its summary, read back if it finished)."""
  from radars_jax import config_check  # pylint: disable=import-outside-toplevel
  from radars_jax.agents import run as agents_run  # pylint: disable=import-outside-toplevel
  summary_path = workdir / "summary.json"
  if summary_path.exists():
    return json.loads(summary_path.read_text())
  config = minatar_config()
  config.agents.env = game
  config.seed = seed
  for text in overrides:
    apply_override(config, text)
  config_check.check_config(config)
  return agents_run.run_search(config, workdir)


def aggregate(summaries: dict[str, list[dict]]) -> dict:
  """{game: {agent: mean and std over seeds of return, multiply-adds,
  weights; A2D's claims on the means}} from each game's run summaries."""
  from radars_jax.agents import run as agents_run  # pylint: disable=import-outside-toplevel
  out = {}
  for game, runs in summaries.items():
    rows = {}
    for name in AGENTS:
      found = [r["agents"][name] for r in runs if name in r["agents"]]
      if not found:
        continue
      returns = np.asarray([a["mean_return"] for a in found], float)
      rows[name] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                    "macs": float(np.mean([a["macs"] for a in found])),
                    "params": float(np.mean([a["params"] for a in found])),
                    "seeds": len(found)}
    claims = agents_run.targets({name: {"mean_return": row["return_mean"], "macs": row["macs"]}
                                 for name, row in rows.items()})
    out[game] = {"agents": rows, "targets": claims,
                 "wall_seconds_mean": float(np.mean([r["search_seconds"] for r in runs]))}
  return out


def table(results: dict) -> str:
  lines = ["| game | agent | return (mean +- std over seeds) | multiply-adds | weights |",
           "|---|---|---|---|---|"]
  for game, entry in results.items():
    for name, row in entry["agents"].items():
      lines.append(f"| {game} | {LABELS[name]} | {row['return_mean']:.2f} +- "
                   f"{row['return_std']:.2f} | {row['macs']:,.0f} | {row['params']:,.0f} |")
  return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
  from radars_jax.report import style  # pylint: disable=import-outside-toplevel
  fig = style.new_figure(4.6 * len(results) + 0.4, 4.0)
  axes = np.atleast_1d(fig.subplots(1, len(results)))
  for ax, (game, entry) in zip(axes, results.items()):
    for i, (name, row) in enumerate(entry["agents"].items()):
      ax.errorbar([row["macs"]], [row["return_mean"]], yerr=[row["return_std"]], fmt="o^sD"[i % 4],
                  capsize=3, color=style.SERIES_COLOURS[i % len(style.SERIES_COLOURS)],
                  label=LABELS[name])
    ax.set_xscale("log")
    ax.set_title(game, weight="bold")
    ax.set_xlabel("multiply-adds per observation")
  axes[0].set_ylabel("mean return (+- std over seeds)")
  axes[0].legend(fontsize="small")
  return style.save_figure(fig, path)


def main(argv=None) -> int:
  args = parse_args(argv)
  from radars_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  games = [g for g in args.games.split(",") if g]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  summaries = {}
  try:
    for game in games:
      summaries[game] = [run_one(game, seed, args.workdir / game / str(seed), args.set)
                         for seed in seeds]
  except (UserError, KeyError, ValueError) as e:
    print(f"a2d_minatar: error: {e}", file=sys.stderr)
    return 2
  results = aggregate(summaries)
  print(table(results))
  for game, entry in results.items():
    print(f"{game}: {json.dumps(entry['targets'])}, {entry['wall_seconds_mean']:.0f} s a run")
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"games": games, "seeds": seeds, "overrides": args.set,
                                     "results": results}, indent=1))
    plot(results, args.json.with_suffix(".png"))
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
