"""Fault injection for the interruption tests: `RGD_KILL_AT=POINT` makes the process SIGKILL
itself when it reaches POINT, so a test can kill it at a moment a signal from outside would only
hit by luck. Unset (always, outside tests), every point is a no-op.

Points:
  checkpoint:N   ckpt-N's data and index files are written, the `checkpoint` state file that
                 lists them is not (rgd.runtime.checkpointing.TrainingCheckpoints.save)
  export:NAME    NAME (model.keras, last.keras) is written under its temporary name, not yet
                 renamed into place (rgd.runtime.checkpointing.export_keras)
"""
import os
import signal
import sys

ENV = "RGD_KILL_AT"


def armed():
  return bool(os.environ.get(ENV))


def kill_point(point):
  if os.environ.get(ENV) == point:
    print(f"{ENV}={point}: killing this process (SIGKILL)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
