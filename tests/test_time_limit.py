"""The watchdog of `search.max_seconds` (`radars_jax.time_limit.Watchdog`)
on a clock the test sets: it fires only while its block is open and only
past the limit plus its grace; searches blocked in a step are in
test_search.py and test_radars.py."""
import threading

from radars_jax import time_limit


def _watch(monkeypatch, clock, grace, poll=0.01):
  ended = threading.Event()
  written = []
  monkeypatch.setattr(time_limit, "end_process", lambda status: ended.set())
  monkeypatch.setattr(time_limit.Watchdog, "POLL_SECONDS", poll)

  def write(reason):
    written.append(reason)
    return {"method": "darts", "space": "nb201", "dataset": "digits", "stop_reason": reason}

  limit = time_limit.TimeLimit(10.0, lambda: clock[0])
  return time_limit.Watchdog(limit, grace, write, "/tmp/run"), ended, written


def test_the_watchdog_ends_the_run_past_the_limit_and_its_grace(monkeypatch, capsys):
  clock = [0.0]
  watchdog, ended, written = _watch(monkeypatch, clock, grace=5.0)
  with watchdog:
    clock[0] = 14.9
    assert not ended.wait(0.2)   # within the grace
    clock[0] = 15.0
    assert ended.wait(10)
  assert len(written) == 1
  assert written[0].startswith("search.max_seconds=10 overrun by search.overrun_seconds=5 ")
  out = capsys.readouterr().out
  assert "darts search on nb201 / digits stopped: search.max_seconds=10 overrun" in out
  assert "rerun the command with a larger --config.search.max_seconds" in out


def test_a_closed_or_unarmed_watchdog_does_nothing(monkeypatch):
  clock = [100.0]   # (long past the limit)
  watchdog, ended, written = _watch(monkeypatch, clock, grace=5.0, poll=30.0)
  with watchdog:
    pass   # the search ended before the watchdog looked
  assert not ended.is_set() and not written
  for grace, max_seconds in ((None, 10.0), (5.0, None)):
    watchdog, ended, written = _watch(monkeypatch, clock, grace=grace)
    watchdog.limit = time_limit.TimeLimit(max_seconds, lambda: clock[0])
    with watchdog:
      assert watchdog._thread is None   # pylint: disable=protected-access
    assert not ended.is_set() and not written


def test_the_watchdog_ends_the_run_even_if_writing_the_summary_hangs(monkeypatch):
  clock = [100.0]
  ended = threading.Event()
  monkeypatch.setattr(time_limit, "end_process", lambda status: ended.set())
  monkeypatch.setattr(time_limit.Watchdog, "POLL_SECONDS", 0.01)
  monkeypatch.setattr(time_limit.Watchdog, "WRITE_SECONDS", 0.05)
  stuck = threading.Event()

  def write(reason):
    stuck.wait()
    return {"method": "darts", "space": "nb201", "dataset": "digits", "stop_reason": reason}

  with time_limit.Watchdog(time_limit.TimeLimit(10.0, lambda: clock[0]), 5.0, write, "/tmp/run"):
    assert ended.wait(10)   # while the summary is still being written
    stuck.set()
