"""Data parallelism over every local device with `jax.sharding`.

One 1-D mesh over all devices, axis `data`: batches are split along their
first axis, weights, alphas and optimiser states are replicated. XLA inserts
the gradient all-reduce; BatchNorm statistics are taken over the global
batch, so results equal the single-device ones up to float rounding.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from radars_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f"{what}={batch_size} is not divisible by the {n} devices; "
                    f"use a multiple of {n}")


def largest_divisible(n: int, cap: int, mesh: Mesh) -> int:
  """Largest multiple of the device count that is <= min(n, cap)."""
  d = mesh.devices.size
  size = (min(n, cap) // d) * d
  if size == 0:
    raise UserError(f"only {n} examples for {d} devices")
  return size
