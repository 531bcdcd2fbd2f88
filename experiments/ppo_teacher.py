"""A PPO teacher agent (radars_jax.agents) trained on one game: environment
steps per second, compile time, and the mean return over 64 whole episodes
before and after.

    python experiments/ppo_teacher.py --env Breakout-MinAtar --updates 20 \\
        --json experiments/results/ppo_teacher_breakout_cpu.json

The settings are `agents.ppo.PPOHParams`'s defaults (purejaxrl's for MinAtar:
64 environments x 128 steps an update, 4 epochs of 8 minibatches) unless
given. Steps per second count the updates after the first, whose time is
reported apart (mostly compiling). Prints a line per figure, writes --json
and a PNG of the return per update beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax

from radars_jax.agents import envs
from radars_jax.agents import networks
from radars_jax.agents import ppo
from radars_jax.errors import UserError
from radars_jax.report import style


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="ppo_teacher", description=__doc__.split("\n")[0])
  parser.add_argument("--env", default="Breakout-MinAtar", help=", ".join(envs.ENV_NAMES))
  parser.add_argument("--updates", type=int, default=20)
  parser.add_argument("--num-envs", type=int, default=ppo.PPOHParams.num_envs)
  parser.add_argument("--num-steps", type=int, default=ppo.PPOHParams.num_steps)
  parser.add_argument("--num-minibatches", type=int, default=ppo.PPOHParams.num_minibatches)
  parser.add_argument("--lr", type=float, default=ppo.PPOHParams.lr)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", type=Path, default=None)
  args = parser.parse_args(argv)
  if args.updates < 2:
    parser.error("--updates must be at least 2 (the first one is timed apart)")
  return args


def plot_returns(history: list, path: Path, title: str) -> Path:
  fig = style.new_figure(6.4, 4.0)
  ax = fig.subplots()
  ax.plot(range(1, len(history) + 1), [h["episode_return"] for h in history],
          color=style.SERIES_COLOURS[0], linewidth=1.8)
  ax.set_xlabel("PPO update")
  ax.set_ylabel("mean return of the episodes that ended")
  ax.set_title(title, weight="bold")
  ax.grid(alpha=0.3)
  return style.save_figure(fig, path)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    env = envs.make_env(args.env)
    hp = ppo.PPOHParams(num_envs=args.num_envs, num_steps=args.num_steps,
                        num_minibatches=args.num_minibatches, lr=args.lr,
                        num_updates=args.updates)
  except UserError as e:
    print(f"ppo_teacher: error: {e}", file=sys.stderr)
    return 2
  trainer = ppo.PPO(env, networks.hand_designed_agent(env), hp)
  key, eval_key = jax.random.split(jax.random.key(args.seed))
  before = trainer.evaluate(trainer.init(key).params, eval_key)
  state, history = ppo.train(trainer, key, args.updates)
  after = trainer.evaluate(state.params, eval_key)
  first_update = history[0]["seconds"]
  rest = sum(h["seconds"] for h in history[1:])
  steps_per_update = hp.num_envs * hp.num_steps
  result = {
      "env": env.name, "backend": jax.default_backend(), "devices": jax.device_count(),
      "hparams": dataclasses.asdict(hp), "updates": args.updates,
      "env_steps": args.updates * steps_per_update,
      "first_update_seconds": first_update,
      "env_steps_per_second": (args.updates - 1) * steps_per_update / rest,
      "return_before": before, "return_after": after, "history": history,
  }
  print(f"{env.name}: {result['env_steps']} environment steps in {args.updates} updates "
        f"on {jax.device_count()} {jax.default_backend()} device(s)")
  print(f"first update (compiling): {first_update:.1f} s")
  print(f"training: {result['env_steps_per_second']:.0f} environment steps/s")
  print(f"mean return over {after['episodes']} episodes: {before['mean_return']:.2f} "
        f"before, {after['mean_return']:.2f} +- {after['std_return']:.2f} after")
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    plot_returns(history, args.json.with_suffix(".png"), f"PPO teacher on {env.name}")
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
