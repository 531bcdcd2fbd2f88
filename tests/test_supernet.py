"""The op registry, the spaces and the supernet built from a subspace."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from radars_jax import config_defaults
from radars_jax.nas import ops as ops_lib
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.errors import UserError


def _cfg(channels, layers, cells_per_stage=1):
  return ml_collections.ConfigDict(
      dict(channels=channels, layers=layers, cells_per_stage=cells_per_stage))


def test_darts_search_network_has_the_public_weight_count():
  space = spaces.make_space("darts")
  full = space.full_subspace()
  model = supernet.build_supernet(space, full, _cfg(16, 8), num_classes=10)
  alphas = jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), full))
  params = supernet.param_shapes(model, (32, 32, 3), alphas)
  assert supernet.count_params(params) == 1_930_618


def test_alphas_are_each_choice_points_own_draw():
  """Drawn in one program, each choice point's alphas are 1e-3 times the
  normal draw of its own length from its own key, eagerly and in a trace."""
  subspace = ((0, 2, 4), (1,), (0, 1, 2, 3, 4), (3, 4))
  key = jax.random.key(7)
  keys = jax.random.split(key, len(subspace))
  expected = [1e-3 * np.asarray(jax.random.normal(k, (len(active),), jnp.float32))
              for k, active in zip(keys, subspace)]
  for alphas in (supernet.init_alphas(key, subspace),
                 jax.jit(lambda k: supernet.init_alphas(k, subspace))(key)):
    chex.assert_shape(alphas, [(3,), (1,), (5,), (2,)])
    for got, want in zip(alphas, expected):
      np.testing.assert_allclose(got, want, rtol=1e-6)


def test_spaces_have_the_documented_shape():
  darts = spaces.make_space("darts")
  assert darts.num_choice_points == 28 and darts.op_names == spaces.DARTS_PRIMITIVES
  large = spaces.make_space("darts_large")
  assert large.op_names[:8] == spaces.DARTS_PRIMITIVES and len(large.op_names) >= 20
  assert all(name in ops_lib.OP_DOCS for name in large.op_names)
  nb201 = spaces.make_space("nb201")
  assert nb201.num_choice_points == 6 and nb201.max_ops == 5
  assert spaces.make_space("darts_large", num_ops=12).max_ops == 12
  assert spaces.make_space("darts", steps=2).num_choice_points == 2 * 5   # 2 nodes: 5 edges


@pytest.mark.parametrize("bad", [dict(name="nope"), dict(name="darts", ops="sep_conv_3x3,magic"),
                                 dict(name="darts", num_ops=99), dict(name="nb201", steps=2)])
def test_bad_space_is_a_user_error(bad):
  with pytest.raises(UserError):
    spaces.make_space(**bad)


def test_darts_nodes_per_cell_must_match_the_space():
  cfg = config_defaults.base_config().supernet
  cfg.steps = 2   # 5 edges per cell; the darts space has 14
  darts = spaces.make_space("darts")
  with pytest.raises(UserError, match="supernet.steps=4"):
    supernet.build_supernet(darts, darts.full_subspace(), cfg, 10)


@pytest.mark.parametrize("name", [n for n in ops_lib.OP_NAMES])
def test_every_op_keeps_channels_and_halves_at_stride_2(name):
  x = jnp.ones((2, 8, 8, 4))
  for stride in (1, 2):
    op = ops_lib.make_op(name, 4, stride, ops_lib.OpSettings())
    variables = op.init(jax.random.key(0), x)
    y = op.apply(variables, x)
    chex.assert_shape(y, (2, 8 // stride, 8 // stride, 4))
    chex.assert_tree_all_finite(y)


def test_mixed_op_holds_only_active_ops_and_paths_are_stable():
  space = spaces.make_space("nb201")
  cfg = _cfg(4, 0)
  small = tuple((1, 3) for _ in range(6))
  big = tuple((1, 2, 3) for _ in range(6))
  p_small = supernet.param_shapes(supernet.build_supernet(space, small, cfg, 10), (8, 8, 3),
                                  jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), small)))
  p_big = supernet.param_shapes(supernet.build_supernet(space, big, cfg, 10), (8, 8, 3),
                                jax.eval_shape(lambda: supernet.init_alphas(jax.random.key(0), big)))
  from radars_jax.nas.weight_pool import flatten
  small_paths, big_paths = set(flatten(p_small)), set(flatten(p_big))
  assert small_paths < big_paths                     # same op, same path
  assert not any("nor_conv_1x1" in p for p in small_paths)  # inactive op: no weights
  assert any("nor_conv_1x1" in p for p in big_paths)


def test_genotype_round_trip_and_derived_network_matches_supernet_selection():
  space = spaces.make_space("darts")
  rng = np.random.default_rng(0)
  full = space.full_subspace()
  alphas = [rng.normal(size=len(a)) for a in full]
  genotype = spaces.derive_genotype(space, full, alphas)
  assert len(genotype["normal"]) == 8 and len(genotype["reduce"]) == 8
  assert all(op != "none" for op, _ in genotype["normal"] + genotype["reduce"])
  derived = spaces.genotype_subspace(space, genotype)
  assert sum(len(a) for a in derived[:14]) == 8
  # every node keeps exactly two incoming edges
  edges = spaces.darts_edges()
  for node in range(2, 6):
    assert sum(1 for e, (s, d) in enumerate(edges) if d == node and derived[e]) == 2


def test_nb201_genotype_is_argmax_per_edge():
  space = spaces.make_space("nb201")
  alphas = [np.eye(5)[i % 5] for i in range(6)]
  g = spaces.derive_genotype(space, space.full_subspace(), alphas)
  assert g["ops"] == [spaces.NB201_OPS[i % 5] for i in range(6)]
  assert g["arch_str"].count("~") == 6


def test_decision_margins_are_the_lead_of_the_strongest_op():
  space = spaces.make_space("nb201")
  sub = ((0, 1, 2), (3,), (1, 4), (0, 1, 2, 3, 4), (2,), (0, 2))
  alphas = [np.log([0.5, 0.3, 0.2]), np.zeros(1), np.zeros(2), np.log([0.1, 0.4, 0.1, 0.3, 0.1]),
            np.zeros(1), np.log([0.25, 0.75])]
  margins = spaces.decision_margins(space, sub, alphas)
  np.testing.assert_allclose(margins, [0.2, np.nan, 0.0, 0.1, np.nan, 0.5], atol=1e-12)
  summary = spaces.margin_summary(space, sub, alphas)
  assert summary["decision_margins"][1] is None
  assert summary["decision_margin_median"] == pytest.approx(0.15)


def test_derived_subspace_network_equals_unweighted_sum():
  """With alphas=None the supernet computes the plain sum of active ops: for a
  single op per edge it is the discrete network."""
  space = spaces.make_space("nb201")
  sub = tuple((3,) for _ in range(6))
  model = supernet.build_supernet(space, sub, _cfg(4, 0), 10)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)   # (programs, not op by op)
  y_none = jax.jit(lambda v, x: model.apply(v, x, None))(variables, x)
  big_alphas = tuple(jnp.zeros((1,)) for _ in sub)  # softmax of one op = 1
  chex.assert_trees_all_close(y_none, jax.jit(model.apply)(variables, x, big_alphas), atol=1e-5)


def test_init_alphas_are_darts_draws_to_the_bit():
  """1e-3 * N(0, 1) per choice point from its own split key, exactly as
  drawn op by op (one program draws them; the host scales them)."""
  key = jax.random.key(3)
  subspace = ((0, 1, 2), (4,), tuple(range(8)))
  alphas = supernet.init_alphas(key, subspace)
  keys = jax.random.split(key, len(subspace))
  for a, k, active in zip(alphas, keys, subspace):
    expected = 1e-3 * jax.random.normal(k, (len(active),), jnp.float32)
    chex.assert_shape(a, (len(active),))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(expected))
