"""The RADARS loop's shared programs (`radars.shared_programs`): one switched
supernet (`radars_jax.nas.supernet`, the subspace as data) for every
subspace of at most k ops per choice point, its train step per k (and its
group step, several subspaces at once: `radars.devices_per_sample`), one
evaluator for every derived genotype, and the conversions between its
weight tree and a subspace's. `radars_jax.dnas.search.Searcher` holds one.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from radars_jax import parallel
from radars_jax.dnas import steps as dnas_lib
from radars_jax.nas import spaces as spaces_lib
from radars_jax.nas import supernet as supernet_lib
from radars_jax.nas import weight_pool as pool_lib

if TYPE_CHECKING:
  from radars_jax.dnas.search import SearchData


class SwitchedSupernet:
  """The RADARS loop's shared programs (`radars.shared_programs`): one
  switched supernet for every subspace, its train step per k, one evaluator
  for every derived genotype, and the conversions between its weight tree
  and a subspace's. Built on first use: a search without shared programs
  never builds it."""

  def __init__(self, config, mesh, data: SearchData, space: spaces_lib.SearchSpace,
               mode: str, batch_size: int, slot_orders=None, alpha_penalty=None):
    """`slot_orders`: per choice point, its ops in the order the switched
    supernet's slots leave them out (`cost_model.CostModel.slot_orders`);
    `alpha_penalty`: the Searcher's (its term of the alphas, through the
    slots)."""
    self.config, self.mesh, self.data, self.space = config, mesh, data, space
    self.mode, self.batch_size, self.slot_orders = mode, batch_size, slot_orders
    self.alpha_penalty = alpha_penalty
    self._model = None
    self._lock = threading.Lock()
    self.shapes = None        # the weight shapes, once the model is built
    self._owners = None       # {param path: (choice point, op)}
    self._evaluator = None
    self._programs: dict = {}

  def model(self):
    """The switched supernet, built (with its weight shapes and owners) on
    the first call."""
    with self._lock:   # (RADARS may build it in its compile thread)
      if self._model is None:
        self._model = supernet_lib.build_supernet(
            self.space, None, self.config.supernet, self.data.num_classes, switched=True,
            slot_orders=self.slot_orders)
        self.shapes = supernet_lib.param_shapes(self._model, self.data.image_shape)
        self._owners = supernet_lib.param_owners(self._model, self.space,
                                                 pool_lib.flatten(self.shapes))
      return self._model

  def program(self, k: int, total_steps: int) -> dnas_lib.DnasProgram:
    """The train step of every subspace with at most `k` ops per choice
    point (one object per k and length of run: its functions compile once)."""
    if (k, total_steps) not in self._programs:
      self._programs[(k, total_steps)] = dnas_lib.DnasProgram(
          self.model(), self.mode, self.config.dnas, total_steps, self.mesh,
          self.data.mean, self.data.std, owners=self._owners,
          alpha_penalty=(None if self.alpha_penalty is None else
                         lambda alphas, slots: self.alpha_penalty(alphas, None, slots)),
          compute_dtype=self.config.supernet.compute_dtype)
    return self._programs[(k, total_steps)]

  def compile_step(self, program: dnas_lib.DnasProgram, k: int) -> dnas_lib.CompiledStep:
    """Compiles `program(k, ...)` on abstract inputs (nothing runs)."""
    compiled = program.compile_train_step(*program.abstract_inputs(*self._abstract(k)))
    compiled.slots = k
    return compiled

  def sample_mesh(self):
    """The `(sample, data)` mesh of `radars.devices_per_sample`."""
    return parallel.make_sample_mesh(int(self.config.radars.devices_per_sample),
                                     self.mesh.devices.flat)

  def compile_group_step(self, program: dnas_lib.DnasProgram, k: int) -> dnas_lib.CompiledStep:
    """Compiles `program.group_step` of `k` (one sample per row of
    `sample_mesh`) on abstract inputs; its bytes are per device."""
    mesh = self.sample_mesh()
    compiled = dnas_lib.compile_ahead(
        program.group_step(mesh), program.group_abstract_inputs(mesh, *self._abstract(k)),
        self.config.dnas.max_program_ops)
    compiled.slots, compiled.samples = k, mesh.shape[parallel.SAMPLE_AXIS]
    return compiled

  def _abstract(self, k: int) -> tuple:
    """`DnasProgram.abstract_inputs`'s arguments for `k` slots per choice point."""
    c = self.space.num_choice_points
    self.model()
    alphas = tuple(jax.ShapeDtypeStruct((k,), jnp.float32) for _ in range(c))
    slots = jax.ShapeDtypeStruct((c, k), jnp.int32)
    return self.shapes, alphas, self.batch_size, self.data.image_shape, slots

  def slots(self, subspace, k: int):
    """The slot of each op of `subspace` in the supernet's `k` slots per
    choice point."""
    return supernet_lib.subspace_slots(subspace, k, self.slot_orders)

  def full_weights(self, weights):
    """`weights` of some ops, completed with zeros to the switched supernet's
    tree (the zeros are never used: the slots do not pick those ops)."""
    self.model()
    flat = pool_lib.flatten(weights)
    return pool_lib.unflatten({p: flat[p] if p in flat else np.zeros(s.shape, s.dtype)
                               for p, s in pool_lib.flatten(self.shapes).items()})

  def subspace_weights(self, weights, subspace):
    """The weights of the switched supernet that the static supernet of
    `subspace` has (the ops of the subspace and everything outside the
    choice points)."""
    return pool_lib.unflatten({
        p: v for p, v in pool_lib.flatten(weights).items()
        if p not in self._owners or self._owners[p][1] in subspace[self._owners[p][0]]})

  def evaluator(self) -> dnas_lib.Evaluator:
    """The holdout evaluator of every genotype (one program for all)."""
    model = self.model()
    with self._lock:   # (RADARS compiles it ahead in its compile thread)
      if self._evaluator is None:
        self._evaluator = dnas_lib.Evaluator(
            dnas_lib.search_logits(model, self.config.supernet.compute_dtype),
            self.mesh, self.data.mean, self.data.std)
      return self._evaluator

  def compile_evaluator(self) -> None:
    """Compiles the evaluator's program as `Searcher.score` runs it on
    the holdout split (a genotype: one op per choice point, in one slot),
    on abstract inputs: the first genotype scored does not wait for it."""
    evaluator = self.evaluator()   # (builds the model and its weight shapes)
    genotype = tuple((ops[0],) for ops in self.space.full_subspace())   # (any one)
    slots = self.slots(genotype, 1)
    op_scales = supernet_lib.to_slots([np.ones(1)] * len(genotype), genotype, slots)
    evaluator.compile_ahead((self.shapes, op_scales, slots), self.data.holdout_split,
                            int(self.config.data.eval_batch_size))
