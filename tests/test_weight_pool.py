"""The weight pool: selection by path, write-back, hits and misses, the
per-edge paths of stacked (scanned) edges."""
import chex
import jax
import numpy as np

from radars_jax.nas import weight_pool
from radars_jax.nas.weight_pool import WeightPool


def test_select_reuses_known_paths_and_keeps_fresh_ones():
  pool = WeightPool()
  trained = {"cell_0": {"edge_0_2": {"sep_conv_3x3": {"kernel": np.full((3,), 7.0)}}}}
  pool.write_back(trained)
  template = {"cell_0": {"edge_0_2": {"sep_conv_3x3": {"kernel": np.zeros(3)},
                                      "max_pool_3x3": {"kernel": np.ones(2)}}}}
  selected = pool.select(template)
  np.testing.assert_array_equal(selected["cell_0"]["edge_0_2"]["sep_conv_3x3"]["kernel"], 7.0)
  np.testing.assert_array_equal(selected["cell_0"]["edge_0_2"]["max_pool_3x3"]["kernel"], 1.0)
  assert (pool.hits, pool.misses) == (1, 1)
  pool.write_back(selected)
  assert len(pool) == 2 and pool.num_weights() == 5


def test_shape_mismatch_is_a_miss():
  pool = WeightPool({"a/kernel": np.zeros((2, 2))})
  out = pool.select({"a": {"kernel": np.ones((3,))}})
  np.testing.assert_array_equal(out["a"]["kernel"], np.ones(3))
  assert pool.misses == 1


def test_stacked_edges_share_the_per_edge_paths():
  """A scanned cell's weights, stored stacked under the name of its edges,
  are read from and written to the pool under each edge's own path."""
  name = weight_pool.stacked_edges_name([(0, 2), (1, 2)])
  assert name == "edges_0-2_1-2"
  stacked = {"cell_0": {name: {"sep_conv_3x3": {"kernel": np.arange(6.0).reshape(2, 3)}},
                        "preprocess0": {"kernel": np.ones(4)}}}
  flat = weight_pool.canonical(stacked)
  assert sorted(flat) == ["cell_0/edge_0_2/sep_conv_3x3/kernel",
                          "cell_0/edge_1_2/sep_conv_3x3/kernel", "cell_0/preprocess0/kernel"]
  np.testing.assert_array_equal(flat["cell_0/edge_1_2/sep_conv_3x3/kernel"], [3.0, 4.0, 5.0])
  chex.assert_trees_all_equal(weight_pool.restack(flat, stacked), stacked)
  shapes = weight_pool.canonical(jax.eval_shape(lambda: stacked))
  assert shapes["cell_0/edge_0_2/sep_conv_3x3/kernel"].shape == (3,)

  pool = WeightPool()
  pool.write_back({"cell_0": {"edge_1_2": {"sep_conv_3x3": {"kernel": np.full(3, 7.0)}}}})
  selected = pool.select(stacked)
  np.testing.assert_array_equal(selected["cell_0"][name]["sep_conv_3x3"]["kernel"],
                                [[0.0, 1.0, 2.0], [7.0, 7.0, 7.0]])
  assert (pool.hits, pool.misses) == (1, 2)
  pool.write_back(selected)
  np.testing.assert_array_equal(pool.arrays["cell_0/edge_0_2/sep_conv_3x3/kernel"], [0, 1, 2])
