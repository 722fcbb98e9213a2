"""Checkpoints, atomic exports and preemption handling for the training loop.

`tf.train.CheckpointManager` writes each checkpoint's files first and then rewrites the small
`checkpoint` index atomically, so a kill at any moment leaves the previous checkpoint valid.
Keras exports and JSON files are written under a temporary name and renamed (rgd.fileio).
"""
import signal

from absl import logging

from rgd import fileio


atomic_write_json = fileio.atomic_write_json


def export_keras(model, path):
  """Saves `model` as a `.keras` file atomically (Keras wants the suffix on the temp name)."""
  with fileio.atomic_path(path, suffix=".keras") as tmp:
    model.save(tmp)


class CheckpointError(RuntimeError):
  """No checkpoint in the model directory can be restored."""


def restore_newest_valid(ckpt, manager):
  """Restores the newest checkpoint of `manager` that can be read; returns its path or None.

  A checkpoint damaged after it was listed (a truncated data file, a missing index, a bad copy
  from a bucket) is skipped with a warning naming it and the one used instead; restoring a
  complete one overwrites every object, so an earlier partial read leaves nothing behind.
  """
  tried = []
  for path in reversed(manager.checkpoints):
    try:
      ckpt.restore(path).assert_existing_objects_matched()
    except Exception as e:  # pylint: disable=broad-except
      # A damaged file surfaces as OpError, ValueError, IndexError ("Read less bytes than
      # requested"), AssertionError (objects not matched)...: all mean "not restorable".
      tried.append(path)
      logging.warning("Cannot restore %s (%s: %s); trying an older checkpoint.", path,
                      type(e).__name__, str(e).splitlines()[0][:200])
      continue
    if tried:
      logging.warning("Resumed from %s instead of the damaged %s.", path, ", ".join(tried))
    return path
  if tried:
    raise CheckpointError(f"none of the checkpoints {tried} can be restored; move them away "
                          "to start afresh")
  return None


class PreemptionFlag:
  """Set by SIGTERM (preemption, `kill`): the loop then checkpoints and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Received signal %d: will checkpoint and stop after this step.", signum)
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)
