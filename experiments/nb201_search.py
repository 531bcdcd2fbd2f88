"""Search strategies on the NAS-Bench-201 table at equal query budgets.

    python experiments/nb201_search.py --metric cifar10-val --report cifar10-test \\
        --queries 100 --seeds 30 --json experiments/results/nb201_search.json

Runs the RADARS PPO controller (k = 1), REINFORCE (independent logits,
moving-average baseline), regularized evolution (population 10, tournament
3) and random search (`--methods` picks a subset), each once per seed
0..S-1 with a budget of Q distinct architectures looked up in the table (a
CSV with an `arch_str` column in NAS-Bench-201 notation and metric columns).
Prints, per method, mean ± std over seeds of the best `--metric` found and
of that architecture's `--report` value, and mean and median seconds per
run (the first PPO/REINFORCE run includes jit compiles); `--json`
writes the same with every run's best-so-far trajectory (`--plot` a PNG of
the mean trajectories). Strategies: `radars_jax/tabular/`; the same
comparison runs as `python -m radars_jax.main --config configs/nb201_table.py`.

Knowledge carried from an earlier task (FNAS): `--transfer-table T2
--transfer-metric M2 --transfer-queries Q2` adds the method `ppo_transfer`,
which first searches T2 on M2 for Q2 queries, then starts PPO on `--table`
from what its controller learned (critic and policy); only `--table`'s
queries count. `../shared/data/nb201_cifar100.csv` holds the same cells'
CIFAR-100 accuracies: a second task.
Bad input: one line `nb201_search: error: ...` on stderr, exit status 2.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TABLE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "nb201_cifar10.csv"))
PROG = "nb201_search"


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None):
  parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--table", default=DEFAULT_TABLE, help="NAS-Bench-201 CSV")
  parser.add_argument("--metric", default="cifar10-val", help="column the search maximises")
  parser.add_argument("--report", default="cifar10-test",
                      help="column reported for the best architecture found")
  parser.add_argument("--queries", type=int, default=100,
                      help="budget: distinct architectures looked up per run")
  parser.add_argument("--seeds", type=int, default=30, help="runs per method (seeds 0..S-1)")
  parser.add_argument("--methods", default=None,
                      help="comma-separated subset of ppo,reinforce,evolution,random,"
                      "ppo_transfer (default: the first four, and ppo_transfer with "
                      "--transfer-table)")
  parser.add_argument("--transfer-table", default=None,
                      help="ppo_transfer's earlier task: a NAS-Bench-201 CSV")
  parser.add_argument("--transfer-metric", default=None,
                      help="the column maximised there (default: --metric)")
  parser.add_argument("--transfer-queries", type=int, default=None,
                      help="queries spent there (default: --queries)")
  parser.add_argument("--json", default=None, help="write every result here")
  parser.add_argument("--plot", default=None, help="write the best-so-far plot (PNG) here")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  # Imported after parsing: --help and flag errors need no JAX.
  from radars_jax.tabular import run as tabular_run  # pylint: disable=import-outside-toplevel
  from radars_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  try:
    methods = args.methods or ("ppo,reinforce,evolution,random"
                               + (",ppo_transfer" if args.transfer_table else ""))
    payload = tabular_run.run_comparison(args.table, args.metric, args.report, args.queries,
                                         args.seeds, methods, progress=not args.no_progress,
                                         transfer_path=args.transfer_table,
                                         transfer_metric=args.transfer_metric,
                                         transfer_queries=args.transfer_queries)
    if args.json:
      tabular_run.write_payload(args.json, payload)
    if args.plot:
      tabular_run.plot_best_so_far(payload, args.plot)
  except UserError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"{PROG}: error: {e.filename}: {e.strerror}", file=sys.stderr)
    return 2
  print(tabular_run.format_summary(payload))
  if args.json:
    print(f"results: {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
