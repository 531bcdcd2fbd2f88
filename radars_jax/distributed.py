"""Several processes (hosts) in one run, on JAX's multi-controller runtime.

Every process runs the same command (`python -m radars_jax.main ...`); the
devices of all of them form the run's mesh (`radars_jax.parallel`), so a
search on two hosts of four GPUs each is data-parallel over eight. Set in
`config.distributed`:
  * `coordinator` ("host:port" of process 0), `num_processes` and
    `process_id` (this process's): `jax.distributed.initialize` with them;
  * or `auto=True`: `jax.distributed.initialize()` with what JAX detects
    (Cloud TPU pod slices, SLURM, Open MPI, Kubernetes);
  * neither (the default): one process.
Every process computes the same search (the same keys, the controller's
samples and updates on every process alike); only process 0 writes the
workdir's reports, summaries, metrics and plots (`is_primary`), and
checkpoints are written by every process together (orbax). The workdir
must be one directory every process sees (a shared or network disk).
"""
from __future__ import annotations

import jax

from radars_jax.errors import UserError

_initialized = False


def initialize(config) -> None:
  """`jax.distributed.initialize` as `config.distributed` says (nothing
  with none set); before anything asks JAX for its devices. Once per
  process."""
  global _initialized   # (JAX itself allows one initialisation a process)
  d = config.distributed
  explicit = d.coordinator is not None
  if _initialized or not (explicit or d.auto):
    return
  if explicit and (d.num_processes is None or d.process_id is None):
    raise UserError("distributed.coordinator needs distributed.num_processes and "
                    "distributed.process_id (this process's, from 0)")
  if explicit and not 0 <= int(d.process_id) < int(d.num_processes):
    raise UserError(f"distributed.process_id={d.process_id} must be in 0.."
                    f"{int(d.num_processes) - 1} (distributed.num_processes="
                    f"{d.num_processes})")
  try:
    if explicit:
      jax.distributed.initialize(d.coordinator, num_processes=int(d.num_processes),
                                 process_id=int(d.process_id))
    else:
      jax.distributed.initialize()
  except (RuntimeError, ValueError) as e:
    raise UserError(f"jax.distributed.initialize failed: {' '.join(str(e).split())[:300]}")
  _initialized = True
  print(f"radars_jax: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} of {jax.device_count()} devices here", flush=True)


def is_primary() -> bool:
  """Whether this process writes the run's reports, summaries and logs
  (process 0; the only process of a one-process run)."""
  return jax.process_index() == 0
