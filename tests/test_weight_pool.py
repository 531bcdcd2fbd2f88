"""The weight pool: selection by path, write-back, hits and misses."""
import numpy as np

from radars_jax.weight_pool import WeightPool


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
