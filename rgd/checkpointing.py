"""Checkpoints, atomic exports and preemption handling for the training loop.

`tf.train.CheckpointManager` writes each checkpoint's files first and then rewrites the small
`checkpoint` index atomically, so a kill at any moment leaves the previous checkpoint valid.
Keras exports and JSON files are written under a temporary name and renamed.
"""
import json
import os
import signal
import tempfile

from absl import logging


def atomic_write_text(path, text):
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def export_keras(model, path):
  """Saves `model` as a `.keras` file atomically (Keras wants the suffix on the temp name)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=folder)
  os.close(fd)
  try:
    model.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


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
