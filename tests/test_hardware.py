"""The hardware-aware objective (`radars_jax.radars.hardware`): exact
parameters and FLOPs of derived networks from per-op costs, the expected
cost under one-hot alphas equal to the derived network's, the rewards'
shapes, the latency table read back instead of timed again, and a RADARS
search aimed at a small target finding a small network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.radars import hardware
from radars_jax.radars import loop as radars_loop
from radars_jax import workdir as workdir_lib

from test_radars import budgeted, tiny_config, whole_space_step_bytes

SPACE = spaces.make_space("nb201")
IMAGE = (8, 8, 3)
SUBSPACES = [((3,), (2,), (1,), (3,), (4,), (2,)),   # every edge live
             ((3,), (3,), (3,), (3,), (3,), (3,)),
             ((3,), (0,), (2,), (0,), (0,), (4,)),   # 0 -> 1 -> 3, the rest dead or none
             ((0,), (0,), (0,), (0,), (0,), (0,))]   # nothing reaches the output


def build(subspace):
  return supernet.build_supernet(SPACE, subspace, tiny_config().supernet, 10)


def whole_network(subspace, metric):
  return hardware.whole_network_cost(build(subspace), IMAGE, metric)


# (FLOPs: within 3%; XLA shares one ReLU of a node between the convolutions
# it feeds, and adds a cell's edges as it sees fit; summary.json also has
# the found network's whole count)
@pytest.mark.parametrize("metric, tolerance", [("params", 0.0), ("flops", 0.03)])
def test_derived_networks_cost_their_ops_plus_the_base(metric, tolerance):
  costs = hardware.measure(SPACE, build, IMAGE, metric)
  assert costs.per_op[:, 0].sum() == 0 and costs.per_op[0, 3] > costs.per_op[0, 2] > 0
  for sub in SUBSPACES[:3]:
    assert costs.of(sub) == pytest.approx(whole_network(sub, metric), rel=tolerance), sub
  # no op reaches the output: only what does not depend on the cell is left
  assert costs.of(SUBSPACES[3]) == costs.base


def test_expected_cost_of_one_hot_alphas_is_the_derived_network_s():
  costs = hardware.HardwareCosts("flops", 100.0, np.arange(30.0).reshape(6, 5) * 10)
  full = SPACE.full_subspace()
  chosen = SUBSPACES[0]
  alphas = [jnp.where(jnp.arange(5) == ops[0], 50.0, 0.0) for ops in chosen]
  assert float(costs.expected(alphas, full)) == pytest.approx(costs.of(chosen), rel=1e-6)
  # the same through a switched supernet's slots: k = 2, slot 0 the chosen op
  slots = np.array([[ops[0], (ops[0] + 1) % 5] for ops in chosen], np.int32)
  slot_alphas = [jnp.array([50.0, 0.0]) for _ in chosen]
  assert float(costs.expected(slot_alphas, None, jnp.asarray(slots))) == pytest.approx(
      costs.of(chosen), rel=1e-6)
  # uniform alphas over a subspace: the mean of its ops' costs, per choice point
  sub = ((1, 2), (3,), (0, 4), (2,), (1,), (3, 4))
  uniform = [jnp.zeros(len(ops)) for ops in sub]
  mean = 100.0 + sum(np.mean(costs.per_op[c, list(ops)]) for c, ops in enumerate(sub))
  assert float(costs.expected(uniform, sub)) == pytest.approx(mean, rel=1e-6)


def test_rewards_peak_at_the_target_or_fall_with_the_cost():
  tunas = [hardware.reward(0.9, cost, 100.0, "tunas", -0.5) for cost in (50, 80, 100, 120, 200)]
  assert tunas[2] == 0.9 and tunas[0] < tunas[1] < tunas[2] > tunas[3] > tunas[4]
  assert tunas[1] == pytest.approx(0.9 - 0.5 * 0.2)
  mnas = [hardware.reward(0.9, cost, 100.0, "mnas", -0.07) for cost in (50, 100, 200)]
  assert mnas[1] == 0.9 and mnas[0] > mnas[1] > mnas[2]
  assert mnas[2] == pytest.approx(0.9 * 2 ** -0.07)
  with pytest.raises(ValueError, match="unknown hardware.form"):
    hardware.reward(0.9, 1.0, 1.0, "linear", -0.1)


def test_the_penalty_pulls_the_derived_network_towards_the_target():
  """The term's value is the derived network's distance from the target,
  its gradient the expected cost's: the pull turns where the derived
  network (each edge's strongest op) crosses the target."""
  costs = hardware.HardwareCosts("params", 0.0, np.tile([0.0, 1.0, 2.0, 10.0, 5.0], (6, 1)))
  config = tiny_config().hardware
  config.update(target=6.0, form="tunas", weight=-1.0, dnas_weight=1.0)
  penalty = hardware.penalty_fn(costs, config)
  full = SPACE.full_subspace()

  def grads(strongest):
    alphas = [jnp.where(jnp.arange(5) == strongest, 1.0, 0.0) for _ in range(6)]
    return penalty(alphas, full), jax.grad(lambda a: penalty(a, full))(alphas)

  # derived: a 3x3 convolution everywhere, 60 weights against 6: towards cheap ops
  value, g = grads(3)
  assert float(value) == pytest.approx(60.0 / 6.0 - 1.0)
  assert all(float(x[0]) < 0 < float(x[3]) for x in g)
  # derived: `none` everywhere, 0 against 6 (the expected cost is still
  # over the target): towards costly ops
  value, g = grads(0)
  assert float(value) == pytest.approx(1.0)
  assert all(float(x[0]) > 0 > float(x[3]) for x in g)


def test_latency_is_timed_once_per_op_and_input(tmp_path):
  table = tmp_path / "latency.json"
  first = hardware.measure(SPACE, build, IMAGE, "latency", batch_size=8, table_path=table)
  assert table.exists() and first.scale > 0
  again = hardware.LatencyTable(table)
  entries = dict(again.entries)
  assert len(entries) >= 5    # the ops of the space, and no op, at each input
  second = hardware.measure(SPACE, build, IMAGE, "latency", batch_size=8, table_path=table)
  np.testing.assert_array_equal(second.per_op, first.per_op)   # read, not timed again
  assert hardware.LatencyTable(table).entries == entries


def test_a_search_aimed_at_few_parameters_finds_a_small_cell(tmp_path):
  """RADARS with the target at the smallest derived network's weights and
  a strong weight: the found cell is within a tenth of the way from the
  cheapest network to the costliest, and the summary says what it costs."""
  config = budgeted(whole_space_step_bytes())
  costs = hardware.measure(SPACE, build, IMAGE, "params")
  cheapest = costs.of(tuple((0,) for _ in range(6)))
  costliest = costs.of(tuple((3,) for _ in range(6)))
  config.hardware.update(metric="params", target=cheapest + 1.0, form="tunas", weight=-1.0,
                         dnas_weight=5.0)
  config.dnas.alpha_lr = 0.05
  summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / "run"), SPACE)
  found = summary["hardware"]
  assert found["metric"] == "params" and found["target"] == cheapest + 1.0
  assert found["cost"] == costs.of(spaces.genotype_subspace(SPACE, summary["genotype"]))
  assert found["measured"] == found["cost"]   # (weights: exact)
  # (unaimed, the same search finds a cell of 11,278 weights: 35% of the
  # way from the cheapest's 4,894 to the costliest's 23,038; aimed, 5,566)
  assert found["cost"] < cheapest + 0.1 * (costliest - cheapest), (found["cost"], cheapest,
                                                                   costliest)
  sampled = [r for r in summary["subspace_runs"] if r["iteration"] != "final"]
  for r in sampled:
    assert r["reward"] == pytest.approx(
        hardware.reward(r["val_accuracy"], r["hardware_cost"], cheapest + 1.0, "tunas", -1.0))
