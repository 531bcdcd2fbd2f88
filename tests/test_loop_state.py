"""The RADARS loop's records (their JSON round trip, as checkpoints hold it)
and the background compile queue, without a search."""
import json
import threading

import numpy as np

from radars_jax.radars import compile_queue
from radars_jax.radars.state import Batch, CompileLog, SearchRecord, SharedDecisions


def test_search_record_round_trips_through_json():
  batch = Batch(np.array([[[0, 2], [1, -1]]], np.int32), np.array([[-0.5, -1.25]], np.float32),
                2, [{"reward": 0.5, "subspace": [[0, 2], [1]]}])
  record = SearchRecord(
      phase="loop", iteration=3, sample=1, batch=batch, history=[{"iteration": 2}],
      runs=[{"iteration": 3, "sample": 0}], best={"reward": 0.5}, cost_model={"slope": 1.0},
      compiles=CompileLog(1.5, 0.25, [{"what": "static step", "ahead": True,
                                       "waited_seconds": 0.25}]),
      shared=SharedDecisions({"2,10": False}, 1234), first_train_step_seconds=7.0,
      elapsed_seconds=12.0, clock_seconds={"xla": 3.0}, loop_clock_seconds=2.0)
  meta = json.loads(json.dumps(record.to_json()))   # as the checkpoint stores it
  again = SearchRecord.from_json(meta)
  assert again.to_json() == meta
  np.testing.assert_array_equal(again.batch.ops, batch.ops)
  assert again.batch.ops.dtype == np.int32 and again.batch.logp.dtype == np.float32
  assert again.batch.subspace(0) == ((0, 2), (1,))
  assert again.shared == record.shared and again.compiles == record.compiles
  assert again.compiles.waited_ahead_seconds() == 0.25


def test_fresh_record_keeps_unknowns_out_of_its_json():
  meta = SearchRecord().to_json()
  assert meta["phase"] == "loop" and meta["batch"] is None
  for absent in ("final", "first_train_step_seconds", "shared_program_ops"):
    assert absent not in meta
  assert SearchRecord.from_json(meta) == SearchRecord()


def test_compile_queue_compiles_each_key_once_in_its_thread():
  queue = compile_queue.CompileQueue(enabled=True)
  threads = []

  def work(x):
    threads.append(threading.current_thread().name)
    return x * 2

  queue.put(("static", 1), work, 1)
  queue.put(("static", 1), work, 1)   # queued already: not again
  queue.put(("shared", 2), work, 2)
  assert queue.get(("static", 1)).result() == 2 and queue.get(("static", 1)) is not None
  assert [f.result() for f in queue.queued("shared")] == [4]
  assert queue.take(("shared", 2)).result() == 4 and queue.take(("shared", 2)) is None
  queue.forget("static")
  assert queue.get(("static", 1)) is None
  queue.close()
  assert len(threads) == 2 and all(t.startswith("radars-compile") for t in threads)


def test_disabled_compile_queue_queues_nothing():
  queue = compile_queue.CompileQueue(enabled=False)
  queue.put(("static", 1), lambda: 1 / 0)
  assert not queue.enabled and queue.get(("static", 1)) is None
  queue.close()
