"""The mobile (MNAS / ProxylessNAS) space (`radars_jax.nas.mobile`): its
layout at every image size, static and switched supernets computing the
same numbers, exact weights and FLOPs of derived networks from per-op
costs, genotypes that export, retrain and draw, and a RADARS search on it
within its budget."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radars_jax import main
from radars_jax.dnas import search
from radars_jax.errors import UserError
from radars_jax.nas import genotypes
from radars_jax.nas import mobile
from radars_jax.nas import spaces
from radars_jax.nas import supernet
from radars_jax.nas import weight_pool
from radars_jax.radars import hardware
from radars_jax.radars import loop as radars_loop
from radars_jax.report import cells as report_cells
from radars_jax.retrain import networks
from radars_jax import workdir as workdir_lib

from test_radars import tiny_config

BLOCKS = "1,2,1,1,1,1"   # 7 blocks; the second block of stage 2 may be skipped
SPACE = spaces.make_space("mobile", blocks=BLOCKS)
IMAGE = (8, 8, 1)


def mobile_config(method="radars"):
  config = tiny_config(method)
  config.data.channels = 1
  config.space.name = "mobile"
  config.space.blocks = BLOCKS
  config.supernet.width_mult = 0.25
  return config


def build(subspace, **kwargs):
  return supernet.build_supernet(SPACE, subspace, mobile_config().supernet, 10, **kwargs)


def test_the_space_s_choice_points_and_its_refusals():
  space = spaces.make_space("mobile")
  assert space.num_choice_points == 21 and space.stage_blocks == (4, 4, 4, 4, 4, 1)
  firsts = {0, 4, 8, 12, 16, 20}
  for c, cp in enumerate(space.choice_points):
    assert ("none" in cp.ops) == (c not in firsts), cp
    assert cp.ops[:6] == spaces.MOBILE_OPS[:6]
  assert space.op_names == spaces.MOBILE_OPS
  assert spaces.make_space("mobile", num_ops=2).choice_points[1].ops == spaces.MOBILE_OPS[:2]
  for blocks in ("4,4", "1,1,1,1,1,0", "a,b,c,d,e,f"):
    with pytest.raises(UserError, match="space.blocks"):
      spaces.make_space("mobile", blocks=blocks)
  with pytest.raises(UserError, match="must come last"):
    spaces.make_space("mobile", ops="none,mbconv_3x3_e3")
  for extra in ({"blocks": "1,1,1,1,1,1"}, {"squeeze_excite": True}):
    with pytest.raises(UserError, match="the mobile space's"):
      spaces.make_space("nb201", **extra)


@pytest.mark.parametrize("size, reductions, last", [(224, 5, 7), (64, 4, 4), (32, 3, 4),
                                                     (28, 2, 7), (8, 1, 4), (3, 0, 3)])
def test_strides_follow_the_image_size(size, reductions, last):
  """ImageNet's 224 pixels pass all five reductions (7x7 at the end), CIFAR
  the last three, digits the last one."""
  assert mobile.reducing_layers(size) == reductions
  stem, plan = mobile.block_plan(spaces.MOBILE_STAGE_BLOCKS, 1.0, size)
  strides = [stem] + [stride for _, stride, _ in plan]
  assert strides.count(2) == reductions and size // 2 ** reductions == last
  # only a stage's first block changes the resolution; widths as MobileNetV2's
  assert all(first for _, stride, first in plan if stride == 2)
  assert [w for w, _, first in plan if first] == [24, 40, 80, 96, 192, 320]


def test_static_and_switched_supernets_compute_the_same():
  """Two ops per block (one block also `none`): the switched supernet with
  those ops in its slots gives the static supernet's logits."""
  subspace = ((0, 5), (1, 2), (3, 6), (0, 4), (2, 3), (1, 5), (0, 1))
  x = jax.random.normal(jax.random.key(0), (4, *IMAGE))
  alphas = tuple(jax.random.normal(jax.random.key(c + 1), (2,)) for c in range(len(subspace)))
  switched = build(None, switched=True)
  slots = supernet.subspace_slots(subspace, 2)
  shapes = supernet.param_shapes(switched, IMAGE, None, slots)
  params = supernet.init_params(switched, IMAGE, None, jax.random.key(1), shapes=shapes)
  static = build(subspace)
  static_paths = weight_pool.flatten(supernet.param_shapes(static, IMAGE, alphas))
  static_params = weight_pool.unflatten(
      {path: value for path, value in weight_pool.flatten(params).items()
       if path in static_paths})
  chex.assert_trees_all_equal_shapes(static_params, weight_pool.unflatten(static_paths))
  want = jax.jit(static.apply)({"params": static_params}, x, alphas)
  got = jax.jit(lambda p, x, a, s: switched.apply(p, x, a, slots=s))(
      {"params": params}, x, supernet.to_slots(alphas, subspace, slots), jnp.asarray(slots))
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  # every weight of a block belongs to its choice point and op
  owners = supernet.param_owners(switched, SPACE, weight_pool.flatten(shapes))
  assert {owner for owner in owners.values()} == {
      (c, o) for c, cp in enumerate(SPACE.choice_points) for o, n in enumerate(cp.ops)
      if n != "none"}


@pytest.mark.parametrize("metric, tolerance", [("params", 0.0), ("flops", 0.03)])
def test_derived_networks_cost_their_blocks_plus_the_base(metric, tolerance):
  costs = hardware.measure(SPACE, build, IMAGE, metric)
  rng = np.random.default_rng(0)
  for _ in range(3):
    chosen = tuple((int(rng.integers(len(cp.ops))),) for cp in SPACE.choice_points)
    whole = hardware.whole_network_cost(build(chosen), IMAGE, metric)
    assert costs.of(chosen) == pytest.approx(whole, rel=tolerance), chosen
    one_hot = [jnp.where(jnp.arange(len(cp.ops)) == op, 50.0, 0.0)
               for cp, (op,) in zip(SPACE.choice_points, chosen)]
    assert float(costs.expected(one_hot, SPACE.full_subspace())) == pytest.approx(
        costs.of(chosen), rel=1e-5)
  # a bigger kernel or expansion costs more; a skipped block nothing
  assert costs.per_op[1, 5] > costs.per_op[1, 1] > costs.per_op[1, 0] > 0
  assert costs.per_op[2, SPACE.choice_points[2].ops.index("none")] == 0


def test_genotypes_export_retrain_and_draw(tmp_path):
  alphas = [np.eye(len(cp.ops))[(c * 3) % len(cp.ops)] for c, cp in
            enumerate(SPACE.choice_points)]
  genotype = spaces.derive_genotype(SPACE, SPACE.full_subspace(), alphas)
  assert genotype["blocks"][2] == "none" and genotype["stage_blocks"] == [1, 2, 1, 1, 1, 1]
  path = tmp_path / "genotype.json"
  path.write_text(json.dumps(genotype))
  loaded = genotypes.load_genotype(str(path))
  assert genotypes.network_kind(loaded) == "mobile" and not loaded["squeeze_excite"]
  assert spaces.genotype_subspace(SPACE, loaded) == tuple(
      (int(np.argmax(a)),) for a in alphas)
  model = networks.build_network(loaded, 10, mobile_width_mult=0.25)
  variables = networks.abstract_variables(model, IMAGE)
  assert "block_2" not in variables["params"] and "block_1" in variables["params"]
  x = jnp.ones((2, *IMAGE))
  full = model.init({"params": jax.random.key(0), networks.DROP_PATH_RNG: jax.random.key(0)},
                    x, train=False)
  logits, aux = model.apply(full, x, train=False)
  chex.assert_shape(logits, (2, 10))
  assert aux is None and networks.count_macs(model, variables, IMAGE) > 0
  # in a space with squeeze-excite, every MBConv of the supernet and of the
  # network its genotype retrains has its gates
  se_space = spaces.make_space("mobile", blocks=BLOCKS, squeeze_excite=True)
  se_genotype = spaces.derive_genotype(se_space, se_space.full_subspace(), alphas)
  assert se_genotype["squeeze_excite"] and genotypes.check_genotype(se_genotype)["squeeze_excite"]
  se_supernet = supernet.build_supernet(se_space, ((0,),) * 7, mobile_config().supernet, 10)
  assert "SqueezeExcite_0" in supernet.param_shapes(se_supernet, IMAGE)["block_1"][
      "mbconv_3x3_e3"]
  se = networks.build_network(se_genotype, 10, mobile_width_mult=0.25)
  se_params = networks.abstract_variables(se, IMAGE)["params"]
  assert "SqueezeExcite_0" in se_params["block_1"]
  for bad, needle in (({"blocks": ["none"] * 7, "stage_blocks": [1, 2, 1, 1, 1, 1]}, "stage1"),
                      ({"blocks": ["mbconv_3x3_e3"] * 3}, "21 blocks")):
    with pytest.raises(UserError, match=needle):
      genotypes.check_genotype(bad)
  drawn = report_cells.draw_genotype(loaded, tmp_path)
  assert drawn[0][0].read_bytes()[:4] == b"\x89PNG"
  assert report_cells.genotype_text(loaded).splitlines()[1].startswith("stage 2: ")
  assert main.genotype_line(loaded).split(" | ")[1].endswith("-")


def test_radars_on_the_mobile_space_stays_in_its_budget(tmp_path):
  """`describe` gives the whole space's step and the architectures'
  range; a RADARS search on a budget the whole space does not fit keeps
  every step within it and draws its mobile genotype in the report."""
  whole = mobile_config("single_darts")
  whole.space.num_ops = 3   # (MBConv 3x3 e3, 3x3 e6, 5x5 e3: smaller programs to compile)
  whole.supernet.depthwise_impl = "xla"   # (the kernels its cost model adds up)
  described = search.describe(whole)
  low, high = described["architecture_range"]["flops"]
  assert 0 < low < high and described["kind"] == "mobile"
  config = mobile_config()
  config.space.num_ops = 3
  config.memory_budget_gb = 0.6 * described["full_space_step_bytes"] / 1e9
  config.radars.budget_margin = 0.0
  config.radars.max_iterations = 1
  summary = radars_loop.run(config, workdir_lib.prepare(tmp_path / "run"),
                            spaces.space_from_config(config.space))
  assert summary["genotype"]["space"] == "mobile"
  assert 0 < summary["step_bytes"] <= config.memory_budget_gb * 1e9
  assert summary["over_budget_steps"] == 0
  assert (tmp_path / "run" / "report" / "cell_mobile.png").exists()

