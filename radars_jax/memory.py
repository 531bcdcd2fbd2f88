"""Memory accounting: the bytes a compiled step needs, read from XLA, and
the budget a search gets when none is set: the device's own limit."""
from __future__ import annotations

import jax

GB = 1e9

# A budget read from the device keeps this fraction of its limit back:
# XLA's figure for a step leaves out what the runtime holds beside it
# (cuDNN and cuBLAS workspaces, collectives' buffers, the data and PRNG
# state placed once per run).
DEVICE_BUDGET_MARGIN = 0.1


def compiled_bytes(compiled) -> int:
  """Peak bytes of one call of a compiled executable, per device: arguments
  + outputs + temporaries, minus what outputs alias (donated inputs)."""
  stats = compiled.memory_analysis()
  if stats is None:  # some backends do not report
    return 0
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def format_gb(num_bytes: float) -> str:
  return f"{num_bytes / GB:.1f} GB" if num_bytes >= 0.1 * GB else f"{num_bytes / 1e6:.1f} MB"


def device_memory_limit(devices=None) -> int | None:
  """The bytes JAX's allocator may hold on each of `devices` (the local
  ones by default): the smallest `memory_stats()["bytes_limit"]`, or None
  where a device reports none (the CPU)."""
  limits = []
  for device in devices if devices is not None else jax.local_devices():
    stats = device.memory_stats()
    if not stats or not stats.get("bytes_limit"):
      return None
    limits.append(int(stats["bytes_limit"]))
  return min(limits) if limits else None


def budget_from_device(limit: int | None) -> float | None:
  """The budget in GB that `limit` bytes give: the limit less
  `DEVICE_BUDGET_MARGIN` (None for None)."""
  return None if limit is None else limit * (1.0 - DEVICE_BUDGET_MARGIN) / GB


def fill_budget_from_device(config) -> None:
  """A search (`mode=search`, not A2D, which takes no budget) left without
  `memory_budget_gb` gets `budget_from_device` of the local devices, said
  in one line; where they report no limit (the CPU) it stays unset."""
  if (config.mode != "search" or config.method == "a2d"
      or config.memory_budget_gb is not None):
    return
  limit = device_memory_limit()
  if limit is None:
    return
  config.memory_budget_gb = budget_from_device(limit)
  print(f"radars_jax: memory_budget_gb unset: {config.memory_budget_gb:.2f} GB, the "
        f"device's limit of {format_gb(limit)} less {DEVICE_BUDGET_MARGIN:.0%}", flush=True)
