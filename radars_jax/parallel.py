"""Data parallelism over every device with `jax.sharding`, and RADARS's
samples in parallel.

One 1-D mesh over all devices, axis `data`: batches are split along their
first axis, weights, alphas and optimiser states are replicated. XLA inserts
the gradient all-reduce; BatchNorm statistics are taken over the global
batch, so results equal the single-device ones up to float rounding.

`radars.devices_per_sample` (RADARS's samples trained at the same time):
a 2-D mesh `(sample, data)`, one row of `devices_per_sample` devices per
sample. A stacked state (one entry per sample) is split over `sample`,
each sample's batch over its row's `data` devices.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from radars_jax.errors import UserError

DATA_AXIS = "data"
SAMPLE_AXIS = "sample"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def make_sample_mesh(devices_per_sample: int, devices=None) -> Mesh:
  """The 2-D mesh `(sample, data)`: rows of `devices_per_sample` devices
  (every device, in `make_mesh`'s order)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  if devices.size % devices_per_sample:
    raise UserError(f"radars.devices_per_sample={devices_per_sample} does not divide the "
                    f"{devices.size} devices")
  return Mesh(devices.reshape(-1, devices_per_sample), (SAMPLE_AXIS, DATA_AXIS))


def sample_sharded(mesh: Mesh) -> NamedSharding:
  """Stacked per-sample arrays (leading axis: the sample) over `sample`."""
  return NamedSharding(mesh, P(SAMPLE_AXIS))


def sample_batch_sharded(mesh: Mesh) -> NamedSharding:
  """Stacked per-sample batches `[samples, batch, ...]`: each sample's
  batch split over its row's `data` devices."""
  return NamedSharding(mesh, P(SAMPLE_AXIS, DATA_AXIS))


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
