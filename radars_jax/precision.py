"""Mixed precision: activations in bfloat16, weights and optimiser state in
float32 (`supernet.compute_dtype`, `train.compute_dtype`).

A step applies its network through `in_dtype(model, dtype)`: the float
parameters and float inputs (images, alphas, op scales) are cast to `dtype`
at the call, so every convolution and matmul runs in `dtype`, and the float
outputs (logits, BatchNorm statistics) are cast back to float32, where the
loss is taken. The casts are inside the differentiated function, so the
gradients reach the float32 weights as float32, and the optimisers,
checkpoints and the weight pool never see another dtype. BatchNorm
normalises in float32 (`radars_jax.nas.ops`). The cost model traces the
same wrapped forward pass, so its bytes are those of the dtype that runs.

`auto` (`radars_jax.performance`) picks bfloat16 on GPU and TPU, whose
matrix units run it at several times float32's rate and whose activations
then take half the memory, and float32 on the CPU, where XLA's bfloat16
convolutions are slower than float32 ones (docs/performance.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CHOICES = (*DTYPES, "auto")


def pick(backend: str) -> str:
  """What `auto` means on `backend`."""
  return "float32" if backend == "cpu" else "bfloat16"


def resolved(name: str | None) -> str:
  """A `compute_dtype` setting as the name of a dtype (None: float32;
  `auto`: the pick for JAX's default backend)."""
  if name is None:
    return "float32"
  if name == "auto":
    return pick(jax.default_backend())
  if name not in DTYPES:
    raise ValueError(f"compute dtype {name!r} is not one of {', '.join(CHOICES)}")
  return name


def dtype_of(name: str | None):
  """The JAX dtype of a `compute_dtype` setting (see `resolved`)."""
  return DTYPES[resolved(name)]


def cast_floating(tree, dtype):
  """`tree` with every floating array (or ShapeDtypeStruct) in `dtype`;
  integer arrays, Python scalars and everything else as they are."""
  def cast(x):
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is None or not jnp.issubdtype(x_dtype, jnp.floating) or x_dtype == dtype:
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
    return x.astype(dtype) if isinstance(x, jax.Array) else np.asarray(x).astype(dtype)
  return jax.tree_util.tree_map(cast, tree)


@dataclasses.dataclass(frozen=True)
class InDtype:
  """`module.apply` in `dtype` (see the module docstring); only `apply`."""
  module: Any
  dtype: Any

  def apply(self, variables, *args, **kwargs):
    variables = dict(variables)
    if "params" in variables:
      variables["params"] = cast_floating(variables["params"], self.dtype)
    args = cast_floating(args, self.dtype)
    kwargs = {k: v if k == "mutable" else cast_floating(v, self.dtype)
              for k, v in kwargs.items()}
    out = self.module.apply(variables, *args, **kwargs)
    return cast_floating(out, jnp.float32)


def in_dtype(module, dtype_name: str | None):
  """`module` (anything with a flax-style `apply`) applied in the dtype
  named `dtype_name`: itself for float32 (or None)."""
  dtype = dtype_of(dtype_name)
  return module if dtype == jnp.float32 else InDtype(module, dtype)
