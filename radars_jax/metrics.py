"""Metrics: TensorBoard event files (tensorboardX: no TensorFlow import
needed), the same scalars as JSON lines for reports, and console progress
bars (tqdm)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import tqdm

from radars_jax import distributed


class MetricWriter:
  """Scalars to TensorBoard event files in `logdir` and, one JSON object a
  line (`{"step", "name", "value"}`), to `jsonl_path`; a no-op for None
  (and in every process but the first of a run of several,
  `radars_jax.distributed`)."""

  def __init__(self, logdir: str | Path | None, jsonl_path: str | Path | None = None):
    self._writer = None
    self._jsonl = None
    if not distributed.is_primary():
      logdir = jsonl_path = None
    if logdir is not None:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(str(logdir), flush_secs=10)
    if jsonl_path is not None:
      self._jsonl = open(jsonl_path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
    for name, value in values.items():
      value = float(np.asarray(value))
      if self._writer is not None:
        self._writer.add_scalar(f"{prefix}{name}", value, int(step))
      if self._jsonl is not None:
        self._jsonl.write(json.dumps({"step": int(step), "name": f"{prefix}{name}",
                                      "value": value}) + "\n")

  def histogram(self, step: int, name: str, values) -> None:
    if self._writer is not None:
      self._writer.add_histogram(name, np.asarray(values), int(step))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._jsonl is not None:
      self._jsonl.close()


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True, **kwargs):
  """A tqdm bar (steps, rate, ETA) on stderr."""
  return tqdm.tqdm(total=total, desc=desc, initial=initial, disable=not enabled,
                   dynamic_ncols=True, leave=True, **kwargs)
