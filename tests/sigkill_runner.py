"""`python -m radars_jax.main FLAGS`, stopped at one moment of a search so
that a test can SIGKILL it exactly there (test_radars.py, test_a2d.py,
test_agent_radars.py).

    python tests/sigkill_runner.py MOMENT[,MOMENT...] FLAGS...

At each MOMENT the process prints `STOPPED <moment>` on stdout and the
thread that reached it blocks forever; the other threads go on until the
kill (the test waits for every moment's line).

MOMENT:
  mid_save=STEP   orbax has written search checkpoint STEP into its
                  temporary directory and is about to commit it (the rename
                  to its final name): its writer thread blocks there, the
                  loop waits for the save.
  compile_thread  the background compile thread has started the job that
                  compiles the final search's step (queued before the last
                  iteration's checkpoint) and blocks in it.
  saved=PARENT/NAME
                  a checkpoint in directory .../PARENT/NAME has been written
                  (complete on disk), and the run blocks before its next
                  step: `dnas/final`, the RADARS loop's final search;
                  `checkpoints/a2d_search`, A2D's search.
  overrun_when_stopped
                  once a moment has stopped the run, `search.max_seconds`
                  counts as overrun by `search.overrun_seconds`: the
                  search's watchdog ends the process (no SIGKILL needed).

Nothing here changes what the search computes: the hooks only stop it, and
the progress plots (`RadarsSearch.write_plots`, drawn at every iteration's
end and again by the run that finishes) are not drawn, to save time.
"""
import sys
import threading


_ANY_STOPPED = threading.Event()


def _stopped(what: str) -> None:
  print(f"STOPPED {what}", flush=True)
  _ANY_STOPPED.set()
  threading.Event().wait()   # until SIGKILL (or the watchdog ends the process)


def _overrun_when_stopped() -> None:
  from radars_jax import time_limit  # pylint: disable=import-outside-toplevel
  time_limit.TimeLimit.overrun = lambda self, grace: _ANY_STOPPED.is_set()


def _stop_mid_save(step: str) -> None:
  # orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it
  # in `finalize` (local file systems). An orbax without this class fails
  # here, and the test with it, rather than never stopping.
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self):
    final = self.get_final()
    if final.parent.name == "search" and final.name == step:
      _stopped(f"mid_save {self.get()}")
    return await original(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize


def _stop_in_compile_thread() -> None:
  from radars_jax.radars import programs  # pylint: disable=import-outside-toplevel
  original = programs.LoopPrograms.compile_static_now

  def compile_now(self, subspace, steps, bytes_only=False):
    final_steps = programs.Sizing(self.config, self.budget,
                                       self.searcher.steps_per_epoch()).final_steps()
    if threading.current_thread().name.startswith("radars-compile") and steps == final_steps:
      _stopped(f"compile_thread {subspace}")
    return original(self, subspace, steps, bytes_only)

  programs.LoopPrograms.compile_static_now = compile_now


def _stop_after_save(directory: str) -> None:
  from radars_jax import checkpointing  # pylint: disable=import-outside-toplevel
  original = checkpointing.Checkpointer.save
  parent, name = directory.split("/")

  def save(self, step, state_pytree, metadata=None):
    original(self, step, state_pytree, metadata)
    if self.directory.name == name and self.directory.parent.name == parent:
      self.wait()
      _stopped(f"saved {step}")

  checkpointing.Checkpointer.save = save


def main() -> None:
  for moment in sys.argv[1].split(","):
    if moment.startswith("mid_save="):
      _stop_mid_save(moment.split("=", 1)[1])
    elif moment == "compile_thread":
      _stop_in_compile_thread()
    elif moment.startswith("saved="):
      _stop_after_save(moment.split("=", 1)[1])
    elif moment == "overrun_when_stopped":
      _overrun_when_stopped()
    else:
      raise SystemExit(f"unknown moment {moment!r}")
  from absl import app  # pylint: disable=import-outside-toplevel
  from radars_jax import main as main_lib  # pylint: disable=import-outside-toplevel
  from radars_jax.radars import loop as radars_loop  # pylint: disable=import-outside-toplevel
  radars_loop.RadarsSearch.write_plots = lambda self, record: None
  sys.argv = [sys.argv[0], *sys.argv[2:]]
  app.run(main_lib.main, flags_parser=main_lib.parse_flags)


if __name__ == "__main__":
  main()
