"""Tabular mode: search strategies on the NAS-Bench-201 table, no training.

    python -m radars_jax.main --config configs/nb201_table.py --workdir runs/nb201_table

Every architecture's reward is read from a CSV (an `arch_str` column in
NAS-Bench-201 notation plus metric columns). The RADARS PPO controller
(k = 1), REINFORCE, regularized evolution and random search each run once
per seed with a budget of `queries` distinct architectures; WORKDIR gets
summary.json (mean/std over seeds of the best `metric` and its `report`
value, per method), tabular_results.json (every run, with trajectories) and
plots/nb201_best_so_far.png. Same as experiments/nb201_search.py.
"""
import os

import ml_collections

from radars_jax import config_defaults

# The shared table next to the repository: <repo>/../shared/data/.
_TABLE = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
    "nb201_cifar10.csv"))


def get_config():
  config = config_defaults.base_config()
  config.mode = "tabular"
  config.table = ml_collections.ConfigDict()
  config.table.path = _TABLE
  config.table.metric = "cifar10-val"     # the search maximises this column
  config.table.report = "cifar10-test"    # reported for the best architecture found
  config.table.queries = 100              # distinct architectures per run
  config.table.seeds = 30                 # runs per method (seeds 0..seeds-1)
  config.table.methods = "ppo,reinforce,evolution,random"
  # ppo_transfer (add it to methods): PPO first searches this earlier task,
  # then carries its critic and policy here (FNAS), e.g. the same cells'
  # CIFAR-100 accuracies: ../shared/data/nb201_cifar100.csv, cifar100-val
  config.table.transfer_path = None
  config.table.transfer_metric = None
  config.table.transfer_queries = None   # None: as many as `queries`
  return config
