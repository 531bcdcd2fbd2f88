"""Checkpoints of arbitrary pytrees with orbax, restored against a template.

    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=3)
    restored = ckpt.restore_latest(state)        # None on a fresh start
    if restored is not None:
      step, state, metadata = restored
    ...
    ckpt.save(step, state, {"epoch": 3})
    ckpt.close()

One wrapper over `orbax.checkpoint.CheckpointManager` that the search and
the final training share. What it adds:

- Any pytree (dicts, lists, tuples, flax/chex dataclasses, optax states) of
  jax or numpy arrays, Python ints / floats / bools and typed PRNG keys
  (stored as `jax.random.key_data`). The tree is saved as a flat list of
  leaves with their paths; a restore needs a *template* of the same
  structure (the freshly initialised state, or its `jax.eval_shape`) and
  gives every leaf back as the template's kind: a jax array with the
  template's sharding, a numpy array, a Python scalar, a PRNG key.
- JSON metadata per step (anything `json.dumps` takes).
- Crash safety: orbax writes a step into a temporary directory and renames
  it when complete, and deletes old steps (beyond `max_to_keep`) only after
  a new one is complete, so a crash mid-save leaves the previous checkpoint
  intact (the partial one is cleaned up at the next start). Saves are
  asynchronous (training goes on while they are written); `close()`,
  `restore_latest()` and `latest_step()` wait for them.
- A corrupt or partial latest step (unreadable files) is moved aside to
  `<step>.corrupt` with one `logging.warning` line (what orbax and asyncio
  log about the failed read is dropped), and the previous step is restored
  instead. A checkpoint of a different structure (another model or
  config in the same directory) is a `UserError`, not a fallback.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from radars_jax.errors import UserError

STATE_ITEM = "state"
META_ITEM = "meta"
FORMAT_VERSION = 1


class _Leaf(NamedTuple):
  """How a template leaf is stored and rebuilt."""
  kind: str                      # "array" | "numpy" | "scalar" | "key"
  shape: tuple[int, ...]         # the stored array's shape
  dtype: np.dtype                # the stored array's dtype
  sharding: Any = None           # jax arrays and keys: where to restore
  impl: Any = None               # keys: the PRNG implementation
  py_type: type | None = None    # scalars: int / float / bool


def _is_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(x):
  if isinstance(x, jax.Array):
    return jax.random.key_impl(x)
  return x.dtype._impl  # pylint: disable=protected-access  # abstract key: ShapeDtypeStruct


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _host_local(sharding) -> bool:
  """Whether an array placed by `sharding` lies on this process's devices
  only, in a run of several processes (`radars_jax.distributed`): every
  process holds its own copy of the same values (the controller's state,
  computed alike everywhere). orbax writes only arrays that span the
  processes, so these are stored as numpy arrays (by process 0) and each
  process puts what it reads back on its own devices."""
  return jax.process_count() > 1 and sharding.is_fully_addressable


def _describe_leaf(x) -> _Leaf:
  """The storage plan of one template (or state) leaf."""
  if _is_key(x):
    impl = _key_impl(x)
    data = jax.eval_shape(lambda k: jax.random.key_data(k), x)  # pylint: disable=unnecessary-lambda
    sharding = getattr(x, "sharding", None) or _default_sharding()
    return _Leaf("key", tuple(data.shape), np.dtype(data.dtype), sharding, impl)
  if isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)) and not isinstance(
      x, np.ndarray):
    py_type = bool if isinstance(x, (bool, np.bool_)) else (
        int if isinstance(x, (int, np.integer)) else float)
    dtype = {bool: np.bool_, int: np.int64, float: np.float64}[py_type]
    return _Leaf("scalar", (), np.dtype(dtype), py_type=py_type)
  if isinstance(x, np.ndarray):
    return _Leaf("numpy", tuple(x.shape), np.dtype(x.dtype))
  if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
    sharding = getattr(x, "sharding", None) or _default_sharding()
    return _Leaf("array", tuple(x.shape), np.dtype(x.dtype), sharding)
  raise TypeError(f"cannot checkpoint a leaf of type {type(x).__name__}; use arrays, "
                  "Python scalars or PRNG keys")


def _to_storable(x, plan: _Leaf):
  """A state leaf as what orbax writes: an array (keys as their data)."""
  if plan.kind in ("key", "array"):
    x = jax.random.key_data(x) if plan.kind == "key" else x
    return np.asarray(x) if _host_local(plan.sharding) else x
  return np.asarray(x, plan.dtype)


def _leaves_with_paths(tree) -> tuple[list[str], list[Any], Any]:
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = [jax.tree_util.keystr(path) for path, _ in flat]
  return paths, [leaf for _, leaf in flat], treedef


def _check_structure(meta: dict, template, step: int, directory: Path) -> None:
  """Raises a `UserError` unless the leaves stored in `meta` (step `step` in
  `directory`) have the paths and shapes of `template`'s: a checkpoint of
  another state is refused, not read."""
  paths, leaves, _ = _leaves_with_paths(template)
  stored = meta["leaves"]
  # Paths and shapes must match; dtypes may differ (the restore casts, so
  # an abstract template may ask for float32 where numpy stored float64).
  expected = [(p, list(_describe_leaf(x).shape)) for p, x in zip(paths, leaves)]
  found = [(d["path"], list(d["shape"])) for d in stored]
  if expected != found:
    diff = next(((e, f) for e, f in zip(expected, found) if e != f), None)
    detail = (f"first difference: checkpoint has {diff[1]}, expected {diff[0]}"
              if diff else f"{len(found)} leaves stored, {len(expected)} expected")
    raise UserError(f"checkpoint step {step} in {directory} holds a different "
                    f"state than this run builds ({detail}); use a new workdir or the "
                    "config that wrote it")


class _QuietOrbax(logging.Filter):
  """Drops orbax's INFO/DEBUG chatter (a dozen lines per save) from absl's
  logger; its warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or (
        f"{os.sep}orbax{os.sep}" not in (record.pathname or ""))


def _quiet_orbax_logging() -> None:
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())


class _ReadReports(logging.Filter):
  """Holds back what orbax (absl's logger) and asyncio log about a step
  while it is read, so that an unreadable step costs one warning line.

  A failed read leaves orbax's other pending reads of the step behind; when
  they are garbage collected, asyncio logs each as "exception was never
  retrieved" with a traceback (dozens for a search state; see also
  `_quiet_leftover_reads`). Records whose
  text names a step being read are held: dropped if the read fails
  (`Checkpointer._set_aside` warns once), passed on if it succeeds; asyncio's
  reports of a failed step's leftover reads are dropped whenever they come."""

  def __init__(self):
    super().__init__()
    self._lock = threading.Lock()
    self._reading: dict[str, list[logging.LogRecord]] = {}
    self._failed: set[str] = set()

  def _step_of(self, record: logging.LogRecord) -> str | None:
    try:
      text = record.getMessage()
    except Exception:  # pylint: disable=broad-except  # a malformed record: not ours
      return None
    leftover = record.name == "asyncio" and "never retrieved" in text
    for step_dir in (*(self._failed if leftover else ()), *self._reading):
      if step_dir in text:
        return step_dir
    return None

  def filter(self, record: logging.LogRecord) -> bool:
    with self._lock:
      step_dir = self._step_of(record)
      if step_dir is None:
        return True
      if step_dir in self._reading:
        self._reading[step_dir].append(record)
      return False

  def busy(self) -> bool:
    """Whether a step is being read or a read has failed."""
    with self._lock:
      return bool(self._reading or self._failed)

  @contextlib.contextmanager
  def reading(self, step_dir: Path):
    """Holds the records about `step_dir` while the block runs; drops them
    if it raises, else logs them as they came."""
    key = str(step_dir) + os.sep
    _quiet_leftover_reads()
    with self._lock:
      self._reading[key] = []
    held: list[logging.LogRecord] = []
    try:
      yield
    except BaseException:
      with self._lock:
        self._failed.add(key)
        self._reading.pop(key, None)
      raise
    else:
      with self._lock:
        held = self._reading.pop(key, [])
    for record in held:
      logging.getLogger(record.name).handle(record)


_READ_REPORTS = _ReadReports()


def _drop_closed_loop_callback(unraisable) -> bool:
  """True for tensorstore's completion callback of a read that outlived
  orbax's event loop (reported with no object, not through logging), while
  a step is read or after one failed."""
  return (unraisable.object is None and unraisable.exc_type is RuntimeError
          and str(unraisable.exc_value) == "Event loop is closed"
          and _READ_REPORTS.busy())


def _quiet_leftover_reads() -> None:
  """When a read fails, orbax's other reads of the step end on their own:
  their callbacks may find its event loop closed (`sys.unraisablehook`,
  dropped by `_drop_closed_loop_callback`) and their coroutines are
  collected unawaited (a `RuntimeWarning`, ignored: radars_jax runs no
  coroutines of its own). Any other report passes."""
  previous = sys.unraisablehook
  if not getattr(previous, "_radars_jax_quiet", False):
    def hook(unraisable):
      if not _drop_closed_loop_callback(unraisable):
        previous(unraisable)
    hook._radars_jax_quiet = True  # pylint: disable=protected-access
    sys.unraisablehook = hook
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)


def _hold_read_reports() -> None:
  for name in ("absl", "asyncio"):
    logger = logging.getLogger(name)
    if _READ_REPORTS not in logger.filters:
      logger.addFilter(_READ_REPORTS)


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """orbax's handler of the state item, its jax arrays written as whole
  replicas: orbax's replica-parallel writing (its default off GPUs) slices
  every replicated array across the devices holding it, which compiles a
  slice program per leaf shape on the first save of a process (about 60
  compiles, some seconds, for a small supernet's state on four CPU
  devices) to split writes that are small here. The files are the same."""
  registry = ocp.type_handlers.create_type_handler_registry(
      (int, ocp.type_handlers.ScalarHandler()),
      (float, ocp.type_handlers.ScalarHandler()),
      (np.number, ocp.type_handlers.ScalarHandler()),
      (np.ndarray, ocp.type_handlers.NumpyHandler()),
      (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _leaf_name(i: int) -> str:
  return f"leaf_{i:06d}"


class Checkpointer:
  """Numbered checkpoints of one pytree (plus JSON metadata) in `directory`."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3):
    self.directory = Path(directory).expanduser().absolute()
    if self.directory.exists() and not self.directory.is_dir():
      raise UserError(f"checkpoint directory {str(self.directory)!r} is not a directory")
    _quiet_orbax_logging()
    _hold_read_reports()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE_ITEM: _state_handler(), META_ITEM: ocp.JsonCheckpointHandler()})

  # -- saving ---------------------------------------------------------------
  def save(self, step: int, state_pytree, metadata: dict | None = None) -> None:
    """Starts writing `state_pytree` (and `metadata`) as step `step`.

    Returns once the arrays are copied off the accelerator; the files are
    written in the background (`close()` waits). A step that already exists
    (for example one left behind by a run that crashed after a fallback) is
    replaced: the new one is written first, under a temporary name.
    """
    step = int(step)
    paths, leaves, _ = _leaves_with_paths(state_pytree)
    plans = [_describe_leaf(leaf) for leaf in leaves]
    arrays = {_leaf_name(i): _to_storable(leaf, plan)
              for i, (leaf, plan) in enumerate(zip(leaves, plans))}
    meta = {
        "format": FORMAT_VERSION,
        "metadata": {} if metadata is None else metadata,
        "leaves": [{"path": p, "kind": plan.kind, "shape": list(plan.shape),
                    "dtype": plan.dtype.name} for p, plan in zip(paths, plans)],
    }
    json.dumps(meta)  # fail here, not in a background thread, if not serialisable
    self._manager.wait_until_finished()
    self._manager.reload()
    if step in self._manager.all_steps():
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.PyTreeSave(arrays),
        META_ITEM: ocp.args.JsonSave(meta)}), force=True)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  # -- restoring --------------------------------------------------------------
  def latest_step(self) -> int | None:
    """The newest complete step on disk (not checked for corruption)."""
    self.wait()
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self.wait()
    self._manager.reload()
    return sorted(int(s) for s in self._manager.all_steps())

  def restore_latest(self, template_pytree=None) -> tuple[int, Any, dict] | None:
    """`(step, state, metadata)` of the newest readable step, or None if
    there is no checkpoint. `template_pytree` fixes the structure and the
    kind, shape, dtype and sharding of every leaf (arrays or
    `jax.ShapeDtypeStruct`s); without one, the state is {leaf path: host
    array} as stored (PRNG keys as their data: for reading part of another
    run's state). A step whose files cannot be read is moved aside with a
    warning and the one before it is tried."""
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      meta = self._read_meta(step, errors)
      if meta is None:
        continue
      stored = meta["leaves"]
      if template_pytree is None:
        template = [np.zeros(d["shape"], np.dtype(d["dtype"])) for d in stored]
      else:
        _check_structure(meta, template_pytree, step, self.directory)
        template = template_pytree
      try:
        with _READ_REPORTS.reading(self.directory / str(step)):
          state = self._read_state(step, template)
      except Exception as e:  # pylint: disable=broad-except  # any read error = corrupt
        self._set_aside(step, e, errors)
        continue
      if template_pytree is None:
        state = {d["path"]: value for d, value in zip(stored, state)}
      return step, state, meta.get("metadata", {})
    if errors:
      raise UserError(f"no checkpoint in {self.directory} could be read (steps "
                      f"{', '.join(map(str, steps))}); the last error: {errors[-1]}. "
                      "Use a new workdir to start afresh")
    return None

  def _read_meta(self, step: int, errors: list) -> dict | None:
    try:
      with _READ_REPORTS.reading(self.directory / str(step)):
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
      meta = restored[META_ITEM]
      if not isinstance(meta, dict) or "leaves" not in meta:
        raise ValueError("metadata has no leaf list")
      return meta
    except Exception as e:  # pylint: disable=broad-except
      self._set_aside(step, e, errors)
      return None

  def _read_state(self, step: int, template):
    _, leaves, treedef = _leaves_with_paths(template)
    plans = [_describe_leaf(x) for x in leaves]
    item, restore_args = {}, {}
    for i, plan in enumerate(plans):
      name = _leaf_name(i)
      if plan.kind in ("array", "key") and not _host_local(plan.sharding):
        item[name] = jax.ShapeDtypeStruct(plan.shape, plan.dtype, sharding=plan.sharding)
        restore_args[name] = ocp.ArrayRestoreArgs(sharding=plan.sharding,
                                                  global_shape=plan.shape, dtype=plan.dtype)
      else:  # numpy arrays and Python scalars stay on the host, in full precision
        item[name] = np.zeros(plan.shape, plan.dtype)
        restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray, dtype=plan.dtype)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.PyTreeRestore(item=item, restore_args=restore_args)}))
    arrays = restored[STATE_ITEM]
    out = []
    for i, plan in enumerate(plans):
      value = arrays[_leaf_name(i)]
      if tuple(value.shape) != plan.shape:
        raise ValueError(f"leaf {i} has shape {value.shape}, expected {plan.shape}")
      if plan.kind in ("array", "key") and _host_local(plan.sharding):
        value = jax.device_put(np.asarray(value), plan.sharding)
      if plan.kind == "key":
        value = jax.random.wrap_key_data(value, impl=plan.impl)
      elif plan.kind == "numpy":
        value = np.asarray(value)
      elif plan.kind == "scalar":
        value = plan.py_type(np.asarray(value).item())
      out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)

  def _set_aside(self, step: int, error: Exception, errors: list) -> None:
    """Moves an unreadable step to `<step>.corrupt` (orbax then ignores it)."""
    message = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    errors.append(message)
    source = self.directory / str(step)
    target = self.directory / f"{step}.corrupt"
    n = 1
    while target.exists():
      n += 1
      target = self.directory / f"{step}.corrupt{n}"
    try:
      os.replace(source, target)
      where = f"moved to {target.name}"
    except OSError as e:
      where = f"could not be moved aside ({e.strerror})"
    logging.warning("checkpoint step %d in %s is unreadable (%s); %s, falling back to "
                    "the previous step", step, self.directory, message, where)
    self._manager.reload()

  # -- end --------------------------------------------------------------------
  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
