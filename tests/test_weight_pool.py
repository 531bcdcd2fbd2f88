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


# ---------------------------------------------------------------------------
# The knowledge pool: weights inherited from the most similar trained one
# ---------------------------------------------------------------------------

def test_similarity_prefers_the_same_op_then_the_same_cell_then_other_kernel_sizes():
  trained = {
      "cell_1/edge_0_2/sep_conv_3x3/dw/kernel": np.full((3, 3, 1, 4), 1.0),
      "cell_0/edge_1_2/sep_conv_3x3/dw/kernel": np.full((3, 3, 1, 4), 2.0),
      "cell_0/edge_0_2/sep_conv_5x5/dw/kernel": np.arange(100.0).reshape(5, 5, 1, 4),
      "cell_0/edge_0_2/nor_conv_1x1/Conv_0/kernel": np.full((1, 1, 4, 4), 3.0),
  }
  index = weight_pool.family_index(trained)
  stored = trained.get
  pick = lambda path, shape: weight_pool.most_similar(path, shape, index, stored)  # pylint: disable=unnecessary-lambda-assignment
  # the same op on the same edge of another cell comes first
  assert pick("cell_0/edge_0_2/sep_conv_3x3/dw/kernel", (3, 3, 1, 4)) == (
      "cell_1/edge_0_2/sep_conv_3x3/dw/kernel", "same_op_other_cell")
  # then the same op on another edge of the same cell
  assert pick("cell_0/edge_0_3/sep_conv_3x3/dw/kernel", (3, 3, 1, 4)) == (
      "cell_0/edge_1_2/sep_conv_3x3/dw/kernel", "same_op_other_edge")
  # another kernel size of the family where no such op was trained
  assert pick("cell_0/edge_0_2/sep_conv_7x7/dw/kernel", (7, 7, 1, 4)) == (
      "cell_0/edge_0_2/sep_conv_5x5/dw/kernel", "other_kernel_size")
  assert pick("cell_0/edge_0_2/nor_conv_3x3/Conv_0/kernel", (3, 3, 4, 4))[1] == (
      "other_kernel_size")
  # never another family, another parameter name or a channel count
  assert pick("cell_0/edge_0_2/dil_conv_3x3/dw/kernel", (3, 3, 1, 4)) is None
  assert pick("cell_0/edge_0_2/sep_conv_3x3/pw/kernel", (1, 1, 4, 4)) is None
  assert pick("cell_2/edge_0_2/sep_conv_3x3/dw/kernel", (3, 3, 1, 8)) is None
  assert pick("cell_0/preprocess0/kernel", (1, 1, 4, 4)) is None


def test_other_kernel_sizes_are_centre_cropped_or_zero_padded():
  five = np.arange(25.0).reshape(5, 5, 1, 1)
  chex.assert_trees_all_equal(weight_pool.fit_kernel(five, (3, 3, 1, 1)), five[1:4, 1:4])
  one = np.full((1, 1, 2, 2), 4.0)
  padded = weight_pool.fit_kernel(one, (3, 3, 2, 2))
  chex.assert_trees_all_equal(padded[1, 1], one[0, 0])
  assert padded.sum() == one.sum()
  # a 1x1 kernel padded to 3x3 computes the same convolution
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype(np.float32)
  conv = lambda k, pad: jax.lax.conv_general_dilated(  # pylint: disable=unnecessary-lambda-assignment
      x, k.astype(np.float32), (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  chex.assert_trees_all_close(conv(padded, "SAME"), conv(one, "SAME"), atol=1e-6)


def test_a_similarity_pool_starts_every_block_it_can_from_trained_weights():
  pool = WeightPool({"cell_0/edge_0_2/sep_conv_3x3/dw/kernel": np.full((3, 3, 1, 2), 5.0)},
                    similarity=True)
  template = {"cell_0": {"edge_1_2": {"sep_conv_5x5": {"dw": {"kernel": np.zeros((5, 5, 1, 2))}},
                                      "sep_conv_3x3": {"dw": {"kernel": np.zeros((3, 3, 1, 2))}}},
                         "edge_0_2": {"sep_conv_3x3": {"dw": {"kernel": np.zeros((3, 3, 1, 2))}},
                                      "nor_conv_1x1": {"kernel": np.ones((1, 1, 2, 2))}}}}
  out = pool.select(template)
  np.testing.assert_array_equal(out["cell_0"]["edge_1_2"]["sep_conv_3x3"]["dw"]["kernel"], 5.0)
  five = out["cell_0"]["edge_1_2"]["sep_conv_5x5"]["dw"]["kernel"]
  assert five.shape == (5, 5, 1, 2) and five[1:4, 1:4].min() == 5.0 and five.sum() == 5.0 * 18
  np.testing.assert_array_equal(out["cell_0"]["edge_0_2"]["nor_conv_1x1"]["kernel"], 1.0)
  assert (pool.hits, pool.misses) == (1, 1)
  assert pool.inherited == {"same_op_other_edge": 1, "other_kernel_size": 1}
