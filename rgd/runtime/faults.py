"""Fault injection for the interruption tests: `RGD_KILL_AT=POINT` makes the process SIGKILL
itself when it reaches POINT, and `RGD_TERM_AT=N` sends it SIGTERM (a preemption notice) after
step N, so a test can stop it at a moment a signal from outside would only hit by luck. Unset
(always, outside tests), every point is a no-op.

Points:
  checkpoint:N   ckpt-N's data and index files are written, the `checkpoint` state file that
                 lists them is not (rgd.runtime.checkpointing.TrainingCheckpoints.save)
  export:NAME    NAME (model.keras, last.keras) is written under its temporary name, not yet
                 renamed into place (rgd.runtime.checkpointing.export_keras)
  step:N         step N is taken, its checkpoint (if one is due) not yet written
                 (rgd.runtime.loop.run; so is RGD_TERM_AT)
"""
import os
import signal
import sys

ENV = "RGD_KILL_AT"
TERM_ENV = "RGD_TERM_AT"


def armed():
  return bool(os.environ.get(ENV))


def kill_point(point):
  if os.environ.get(ENV) == point:
    print(f"{ENV}={point}: killing this process (SIGKILL)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step):
  """The loop's point after step `step`: SIGKILL at `step:N`, SIGTERM at RGD_TERM_AT=N."""
  kill_point(f"step:{step}")
  if os.environ.get(TERM_ENV) == str(step):
    print(f"{TERM_ENV}={step}: sending this process SIGTERM", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
