"""Programs compiled in one background thread while the search loop works.

XLA compiles on the host; a search spends much of its start and of each
iteration compiling train steps. The RADARS loop queues the programs it will
need next (the later samples' train steps, the first shared program, its
batches and evaluator, the controller update, the final search's step)
here; each compiles in order on the queue's one thread while the loop
trains (on an accelerator the host compiles while the device computes),
and the loop takes it when it gets there. The programs are the ones the loop would
compile itself, so results do not depend on the queue: with it disabled
(`radars.compile_ahead=False`) nothing is queued and the loop compiles each
program when it needs it.

    queue = CompileQueue(enabled=True)
    queue.put(("static", subspace, steps), compile_fn, subspace, steps)
    ...
    future = queue.get(("static", subspace, steps))   # None if never queued
    compiled = future.result() if future else compile_fn(subspace, steps)
    queue.close()
"""
from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Hashable, Iterator


class CompileQueue:
  """Compiles queued under a key, one at a time in a background thread.

  A key is queued at most once until `forget` drops it (or `take` takes it),
  so queuing the same program twice compiles it once. Keys are tuples whose
  first item names their kind ("static", "shared", "batches", "evaluator",
  "controller"), which `forget` and `queued` select by."""

  def __init__(self, enabled: bool, thread_name: str = "radars-compile"):
    self._executor = (concurrent.futures.ThreadPoolExecutor(1, thread_name)
                      if enabled else None)
    self._futures: dict[Hashable, concurrent.futures.Future] = {}

  @property
  def enabled(self) -> bool:
    return self._executor is not None

  def put(self, key: tuple, fn: Callable[..., Any], *args) -> None:
    """Queues `fn(*args)` under `key`, unless the queue is disabled or
    `key` is queued already."""
    if self._executor is not None and key not in self._futures:
      self._futures[key] = self._executor.submit(fn, *args)

  def get(self, key: tuple) -> concurrent.futures.Future | None:
    """The future of `key` (it stays queued), or None."""
    return self._futures.get(key)

  def take(self, key: tuple) -> concurrent.futures.Future | None:
    """The future of `key`, removed from the queue, or None."""
    return self._futures.pop(key, None)

  def queued(self, kind: str) -> Iterator[concurrent.futures.Future]:
    """The futures of the keys of `kind`, in the order they were queued."""
    return iter([f for key, f in self._futures.items() if key[0] == kind])

  def forget(self, kind: str) -> None:
    """Drops the keys of `kind` (their compiles, if running, still finish)."""
    for key in [key for key in self._futures if key[0] == kind]:
      del self._futures[key]

  def close(self) -> None:
    """Stops the thread; compiles not yet started are dropped."""
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
    self._futures.clear()
