"""Search strategies on the NAS-Bench-201 table, compared at equal query
budgets (`table.QueryBudget`).

Every strategy stops when it has made exactly `queries` queries and returns
the best queried architecture by the search metric, with its report value:
  * `ppo`: the RADARS controller (`radars_jax.radars.controller`) with k = 1: each
    sample is one architecture; `tabular_controller_config()` holds its
    settings for this setting.
  * `reinforce`: TuNAS-style REINFORCE: independent categorical logits per
    edge, one architecture per step, exponential moving-average baseline
    (decay 0.95), Adam.
  * `evolution`: regularized evolution (Real et al. 2019): population 10,
    tournament of 3, the child mutates one edge of the winner to another op,
    the oldest member dies.
  * `random`: uniform random architectures.
  * `ppo_transfer`: `ppo` started from the knowledge of an earlier task
    (FNAS): first `ppo` searches another table (`TransferSource`: its own
    metric and query budget), then its critic and policy
    (`radars_jax.radars.knowledge`) start the search on this one. Only
    this table's queries count against the budget.
Policy-based strategies can collapse on architectures already queried (no
new query comes); after `stall_patience` samples without a new query they
sample at twice the temperature (doubling again while stalled, back to 1 at
the next new query). PPO learns off-policy from those samples with their
tempered behaviour log-probabilities.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from radars_jax import config_defaults
from radars_jax.radars import controller as controller_lib
from radars_jax.radars import ppo
from radars_jax.errors import UserError
from radars_jax.radars import knowledge as knowledge_lib
from radars_jax.tabular.table import (NB201_OPS, NUM_ARCHS, NUM_EDGES, NUM_OPS, QueryBudget,
                                      SearchResult, Table, arch_index, check_search,
                                      search_result)

METHODS = ("ppo", "reinforce", "evolution", "random")
# methods that need an earlier task (`TransferSource`)
TRANSFER_METHODS = ("ppo_transfer",)
NO_TRANSFER_SOURCE = ("ppo_transfer needs an earlier task: --transfer-table "
                      "(experiments/nb201_search.py) or table.transfer_path")
# the NB-201 cell's edges and ops, as the controller's knowledge names them
TABLE_NAMES = tuple((f"edge{e}", NB201_OPS) for e in range(NUM_EDGES))


# ---------------------------------------------------------------------------
# Random search and regularized evolution
# ---------------------------------------------------------------------------

def search_random(table: Table, queries: int, seed: int) -> SearchResult:
  """Uniform random architectures until `queries` distinct ones are queried."""
  check_search(table, queries)
  start = time.time()
  rng = np.random.default_rng(seed)
  budget = QueryBudget(table, queries)
  while not budget.exhausted:
    budget.lookup(rng.integers(NUM_ARCHS))
  return search_result("random", seed, budget, start)


def search_evolution(table: Table, queries: int, seed: int, population_size: int = 10,
                     sample_size: int = 3, max_samples_factor: int = 100) -> SearchResult:
  """Regularized evolution (aging): random initial population, then
  repeatedly: tournament of `sample_size` random members, the best one's
  child (one edge changed to a different op) joins, the oldest leaves."""
  check_search(table, queries)
  start = time.time()
  rng = np.random.default_rng(seed)
  budget = QueryBudget(table, queries)
  population: list[tuple[tuple[int, ...], float]] = []
  while len(population) < population_size and not budget.exhausted:
    ops = tuple(int(o) for o in rng.integers(NUM_OPS, size=NUM_EDGES))
    population.append((ops, budget.lookup(arch_index(ops))))
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    contenders = rng.choice(len(population), size=min(sample_size, len(population)),
                            replace=False)
    parent = max((population[i] for i in contenders), key=lambda member: member[1])[0]
    child = list(parent)
    edge = int(rng.integers(NUM_EDGES))
    child[edge] = int(rng.choice([o for o in range(NUM_OPS) if o != parent[edge]]))
    child = tuple(child)
    population.append((child, budget.lookup(arch_index(child))))
    population.pop(0)
  while not budget.exhausted:  # guard, practically never: fill with random cells
    budget.lookup(rng.integers(NUM_ARCHS))
  return search_result("evolution", seed, budget, start)


# ---------------------------------------------------------------------------
# REINFORCE (TuNAS)
# ---------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("lr",))
def _reinforce_update(logits, opt_state, ops, advantage, lr: float):
  """One REINFORCE step: gradient of -advantage * log pi(ops), Adam."""
  def loss_fn(l):
    logp = jax.nn.log_softmax(l, axis=-1)
    return -advantage * jnp.sum(jnp.take_along_axis(logp, ops[:, None], axis=-1))
  grads = jax.grad(loss_fn)(logits)
  updates, opt_state = optax.adam(lr).update(grads, opt_state, logits)
  return optax.apply_updates(logits, updates), opt_state


@jax.jit
def _categorical_sample(key, logits, temperature):
  return jax.random.categorical(key, logits / temperature, axis=-1)


def search_reinforce(table: Table, queries: int, seed: int, lr: float = 0.1,
                     baseline_decay: float = 0.95, stall_patience: int = 20,
                     max_samples_factor: int = 100) -> SearchResult:
  """TuNAS-style REINFORCE: independent categorical logits per edge (zero
  init), one architecture per step, reward = metric / 100, advantage =
  reward - moving-average baseline (decay `baseline_decay`, started at the
  first reward), Adam with learning rate `lr`."""
  check_search(table, queries)
  start = time.time()
  budget = QueryBudget(table, queries)
  key = jax.random.PRNGKey(seed)
  logits = jnp.zeros((NUM_EDGES, NUM_OPS), jnp.float32)
  opt_state = optax.adam(lr).init(logits)
  baseline = None
  stall = _Stall(stall_patience)
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    key, sample_key = jax.random.split(key)
    ops = _categorical_sample(sample_key, logits, stall.temperature)
    used = budget.used
    reward = budget.lookup(arch_index(np.asarray(ops))) / 100.0
    stall.observe(budget.used - used, 1)
    if budget.exhausted:
      break
    baseline = reward if baseline is None else baseline
    logits, opt_state = _reinforce_update(logits, opt_state, ops, reward - baseline, lr)
    baseline = baseline_decay * baseline + (1.0 - baseline_decay) * reward
  _fill_randomly(budget, seed)
  return search_result("reinforce", seed, budget, start)


class _Stall:
  """Sampling temperature that doubles (up to 64) after `patience` samples
  without a new query and returns to 1 at the next new query."""

  def __init__(self, patience: int):
    self.patience = patience
    self.temperature = 1.0
    self.samples_without_new = 0

  def observe(self, new_queries: int, samples: int) -> None:
    if new_queries > 0:
      self.temperature, self.samples_without_new = 1.0, 0
      return
    self.samples_without_new += samples
    if self.samples_without_new >= self.patience:
      self.temperature = min(2.0 * self.temperature, 64.0)
      self.samples_without_new = 0


def _fill_randomly(budget: QueryBudget, seed: int) -> None:
  """Guard for a run that hit its sample cap (practically never): spend the
  rest of the budget on random cells, so every run makes exactly Q queries."""
  rng = np.random.default_rng(seed + 7919)
  while not budget.exhausted:
    budget.lookup(rng.integers(NUM_ARCHS))


# ---------------------------------------------------------------------------
# PPO: the RADARS controller with k = 1
# ---------------------------------------------------------------------------

def tabular_controller_config() -> ml_collections.ConfigDict:
  """The controller's settings for tabular search with a small query budget
  (every sample is one architecture, k = 1): few samples per iteration, so
  that the policy is updated often; a small critic and buffer, so that an
  update is cheap."""
  c = config_defaults.controller_config()
  c.samples_per_iteration = 10
  c.lr = 0.05
  c.ppo_epochs = 8
  c.clip_eps = 0.2
  c.entropy_coef = 0.01
  c.replay_capacity = 256
  c.replay_batch = 32
  c.replay_weight = 0.5
  c.critic_hidden = (32, 32)
  c.critic_steps = 50
  return c


def search_ppo(table: Table, queries: int, seed: int,
               config: ml_collections.ConfigDict | None = None, **kwargs) -> SearchResult:
  """The RADARS PPO controller with k = 1 over the 6 edges x 5 ops
  (`run_ppo`)."""
  return run_ppo(table, queries, seed, config, **kwargs)[0]


def run_ppo(table: Table, queries: int, seed: int,
            config: ml_collections.ConfigDict | None = None, stall_patience: int = 20,
            max_samples_factor: int = 100,
            prior: knowledge_lib.ControllerKnowledge | None = None, prior_policy: bool = True,
            method: str = "ppo") -> tuple[SearchResult, controller_lib.ControllerState]:
  """`search_ppo`'s run and the controller it ends with. Each iteration
  samples `samples_per_iteration` cells, looks them up (repeats are free
  and still train the controller; cells beyond the budget are left
  unscored) and runs one `controller_update`. `prior`: knowledge carried
  into the fresh controller (its critic; with `prior_policy` its logits)."""
  check_search(table, queries)
  start = time.time()
  config = tabular_controller_config() if config is None else config
  hparams = controller_lib.ControllerHParams.from_config(config)
  num_samples = int(config.samples_per_iteration)
  budget = QueryBudget(table, queries)
  key, init_key = jax.random.split(jax.random.PRNGKey(seed))
  state = controller_lib.init_controller(init_key, NUM_EDGES, NUM_OPS, config)
  if prior is not None:
    state = knowledge_lib.carry(prior, state, TABLE_NAMES, prior_policy)
  alive = jnp.ones((NUM_EDGES, NUM_OPS), bool)
  stall = _Stall(stall_patience)
  while not budget.exhausted and budget.lookups < max_samples_factor * queries:
    key, sample_key, update_key = jax.random.split(key, 3)
    ops, behaviour_logp = controller_lib.sample_subspaces(
        sample_key, state.logits, alive, 1, num_samples, stall.temperature,
        per_choice_point=True)
    cells = np.asarray(ops)[..., 0]
    used = budget.used
    values = [budget.lookup(arch_index(cell)) for cell in cells]
    stall.observe(budget.used - used, num_samples)
    if budget.exhausted:
      break
    rewards = np.array([np.nan if v is None else v for v in values], np.float32)
    state, _ = ppo.controller_update(
        state, update_key, ops, behaviour_logp, rewards, alive, hparams)
  _fill_randomly(budget, seed)
  return search_result(method, seed, budget, start), state


@dataclasses.dataclass(frozen=True)
class TransferSource:
  """The earlier task `ppo_transfer` learns on first: a table (with its own
  metric), the queries spent there, and whether the policy is carried
  besides the critic."""
  table: Table
  queries: int
  policy: bool = True


def search_ppo_transfer(table: Table, queries: int, seed: int,
                        transfer: TransferSource | None = None,
                        config: ml_collections.ConfigDict | None = None) -> SearchResult:
  """`ppo` on `transfer.table` for `transfer.queries` queries (seed + 10,007),
  then `ppo` on `table` from what its controller learned."""
  if transfer is None:
    raise UserError(NO_TRANSFER_SOURCE)
  _, learned = run_ppo(transfer.table, transfer.queries, seed + 10_007, config)
  prior = knowledge_lib.from_state(learned, TABLE_NAMES)
  return run_ppo(table, queries, seed, config, prior=prior, prior_policy=transfer.policy,
                 method="ppo_transfer")[0]


# ---------------------------------------------------------------------------
# Choosing strategies by name
# ---------------------------------------------------------------------------

def parse_methods(methods) -> tuple[str, ...]:
  """Method names from "a,b" or a sequence, in order, without repeats;
  UserError for an unknown or empty selection."""
  if isinstance(methods, str):
    names = [m.strip() for m in methods.split(",")]
  else:
    names = [str(m).strip() for m in methods]
  names = list(dict.fromkeys(n for n in names if n))
  if not names:
    raise UserError(f"no methods given: choose from {', '.join(METHODS)}")
  known = METHODS + TRANSFER_METHODS
  unknown = [n for n in names if n not in known]
  if unknown:
    raise UserError(f"unknown method {unknown[0]!r}: choose from {', '.join(known)}")
  return tuple(names)


STRATEGIES: dict[str, Callable[..., SearchResult]] = {
    "ppo": search_ppo,
    "reinforce": search_reinforce,
    "evolution": search_evolution,
    "random": search_random,
    "ppo_transfer": search_ppo_transfer,
}


def run_strategy(method: str, table: Table, queries: int, seed: int,
                 transfer: TransferSource | None = None, **kwargs) -> SearchResult:
  """Run strategy `method` (one of METHODS) once (`ppo_transfer` from
  `transfer`)."""
  if method not in STRATEGIES:
    raise UserError(f"unknown method {method!r}: choose from {', '.join(STRATEGIES)}")
  if method in TRANSFER_METHODS:
    kwargs["transfer"] = transfer
  return STRATEGIES[method](table, queries, seed, **kwargs)
