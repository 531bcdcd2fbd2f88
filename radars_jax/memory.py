"""Memory accounting: the bytes a compiled step needs, read from XLA."""
from __future__ import annotations

GB = 1e9


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
