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
