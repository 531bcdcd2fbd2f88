"""A2D against its baselines on MinAtar games over seeds: mean return (+- std
over seeds), multiply-adds, weights and wall time of the teacher, the small
hand-designed agent, plain DNAS and A2D, and whether A2D's claims hold.

    python experiments/a2d_minatar.py --small --jobs 2 --workdir runs/a2d_minatar \\
        --json experiments/results/a2d_minatar_small.json

Each (game, seed) is `python -m radars_jax.main --config configs/minatar.py`
with that game and seed in WORKDIR/GAME/SEED (its output in
WORKDIR/GAME/SEED.log when `--jobs` runs several at once; `--set
agents.FIELD=VALUE` changes the config for every run): a run that finished
is read back, a killed one resumes. `--small` is the small setting
(`SMALL_SETTING`: the teacher and every student trained equally long, short
searches), 3 games x 3 seeds within two hours on 2 CPU cores. Prints a
markdown table, writes --json and a PNG of return against multiply-adds
(one panel a game) beside it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("teacher", "small", "dnas", "a2d")
LABELS = {"teacher": "teacher", "small": "small hand-designed", "dnas": "plain DNAS",
          "a2d": "A2D"}
# The small setting: the teacher and the students each 200 PPO updates (1.6M
# environment steps: a fair race, where a teacher trained longer than its
# students wins by its budget alone), the searches 20 updates each, and A2D's
# cell not retrained without distillation (not in the comparison).
SMALL_SETTING = ("agents.teacher_updates=200", "agents.retrain_updates=200",
                 "agents.search_updates=20", "agents.undistilled=false")


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="a2d_minatar", description=__doc__.split("\n")[0])
  parser.add_argument("--games", default="Breakout-MinAtar,Asterix-MinAtar,SpaceInvaders-MinAtar")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", type=Path, default=Path("runs/a2d_minatar"))
  parser.add_argument("--set", action="append", default=[], metavar="agents.FIELD=VALUE",
                      help="a config override for every run (repeatable)")
  parser.add_argument("--small", action="store_true",
                      help="the small setting (SMALL_SETTING, before --set)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="runs at once, each its own process (default 1)")
  parser.add_argument("--json", type=Path, default=None)
  args = parser.parse_args(argv)
  if args.jobs < 1:
    parser.error(f"--jobs must be at least 1, got {args.jobs}")
  args.set = [*SMALL_SETTING, *args.set] if args.small else args.set
  return args


def minatar_config():
  spec = importlib.util.spec_from_file_location("minatar", ROOT / "configs" / "minatar.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def apply_override(config, text: str) -> None:
  """`a.b=value` with the value parsed as the field's type."""
  from radars_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  name, _, value = text.partition("=")
  *blocks, field = name.split(".")
  block = config
  try:
    for b in blocks:
      block = block[b]
    current = block[field]
  except (KeyError, TypeError) as e:
    raise UserError(f"--set {text}: the config has no field {name}") from e
  if isinstance(current, bool):
    block[field] = value.lower() in ("1", "true", "yes")
  elif isinstance(current, (int, float)):
    block[field] = type(current)(value)
  else:
    block[field] = value


def check_overrides(overrides) -> None:
  """Bad `--set` values end the script before any run starts (UserError or
  ValueError)."""
  from radars_jax import config_check  # pylint: disable=import-outside-toplevel
  config = minatar_config()
  for text in overrides:
    apply_override(config, text)
  config_check.check_config(config)


def run_command(game: str, seed: int, workdir: Path, overrides, progress: bool) -> list[str]:
  """The command line of one (game, seed) run."""
  return [sys.executable, "-m", "radars_jax.main", "--config", str(ROOT / "configs" / "minatar.py"),
          "--workdir", str(workdir), f"--config.agents.env={game}", f"--config.seed={seed}",
          f"--config.progress_bar={progress}", *(f"--config.{text}" for text in overrides)]


def run_one(game: str, seed: int, workdir: Path, overrides, log: Path | None = None) -> dict:
  """One A2D run, its output to the terminal or to `log` (its summary,
  read back if it finished)."""
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    command = run_command(game, seed, workdir, overrides, progress=log is None)
    if log is None:
      returncode = subprocess.run(command, cwd=ROOT, check=False).returncode
    else:
      log.parent.mkdir(parents=True, exist_ok=True)
      with open(log, "w", encoding="utf-8") as out:
        returncode = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    check=False).returncode
    if returncode != 0 or not summary_path.exists():
      raise RuntimeError(f"{game} seed {seed} ended with exit status {returncode}"
                         + (f" (its output: {log})" if log is not None else ""))
  return json.loads(summary_path.read_text())


def run_all(games, seeds, workdir: Path, overrides, jobs: int) -> dict[str, list[dict]]:
  """{game: [each seed's summary]}, `jobs` runs at once."""
  futures = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    for game in games:
      for seed in seeds:
        log = workdir / game / f"{seed}.log" if jobs > 1 else None
        future = pool.submit(run_one, game, seed, workdir / game / str(seed), overrides, log)
        if log is not None:
          future.add_done_callback(
              lambda f, game=game, seed=seed: print(
                  f"{game} seed {seed}: {'failed' if f.exception() else 'done'}", flush=True))
        futures[(game, seed)] = future
    return {game: [futures[(game, seed)].result() for seed in seeds] for game in games}


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
    out[game] = {
        "agents": rows, "targets": claims,
        "wall_seconds_mean": float(np.mean([r["search_seconds"] for r in runs])),
        "teacher_env_steps_per_second": _mean_rate([r["agents"]["teacher"] for r in runs]),
        "search_env_steps_per_second": _mean_rate([r["searches"]["a2d_search"] for r in runs])}
  return out


def _mean_rate(phases) -> float | None:
  """The mean environment steps per second of phases run here (a loaded
  teacher has none)."""
  rates = [p["env_steps_per_second"] for p in phases if p.get("env_steps_per_second")]
  return float(np.mean(rates)) if rates else None


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
  started = time.perf_counter()
  try:
    check_overrides(args.set)
    summaries = run_all(games, seeds, args.workdir, args.set, args.jobs)
  except (UserError, ValueError, RuntimeError) as e:
    print(f"a2d_minatar: error: {e}", file=sys.stderr)
    return 2
  wall = time.perf_counter() - started
  results = aggregate(summaries)
  print(table(results))
  for game, entry in results.items():
    rates = ", ".join(f"{what} {entry[f'{what}_env_steps_per_second']:,.0f}"
                      for what in ("teacher", "search")
                      if entry[f"{what}_env_steps_per_second"] is not None)
    print(f"{game}: {json.dumps(entry['targets'])}; {entry['wall_seconds_mean']:.0f} s a run; "
          f"environment steps/s: {rates}")
  print(f"{len(games) * len(seeds)} runs, {args.jobs} at once: {wall:.0f} s here "
        f"(runs finished before are read back)")
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"games": games, "seeds": seeds, "overrides": args.set,
                                     "jobs": args.jobs, "wall_seconds": wall,
                                     "results": results}, indent=1))
    plot(results, args.json.with_suffix(".png"))
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
