"""Checkpoints and atomic exports for the training loop (SIGTERM: rgd.runtime.preemption).

`tf.train.CheckpointManager` writes each checkpoint's files first and then rewrites the small
`checkpoint` index atomically, so a kill at any moment leaves the previous checkpoint valid.
Keras exports and JSON files are written under a temporary name and renamed (rgd.runtime.fileio).
"""
import posixpath

from absl import logging
import tensorflow as tf

from rgd.errors import CheckpointError
from rgd.models import fused_bn
from rgd.runtime import faults, fileio, strategy as strategy_lib


atomic_write_json = fileio.atomic_write_json


def export_keras(model, path):
  """Saves `model` as a `.keras` file atomically (Keras wants the suffix on the temp name).

  Fused BatchNorm layers are written as Keras' own BatchNormalization (same variables and
  statistics, rgd.models.fused_bn.to_keras_batchnorm), so that a classifier built from standard
  layers loads with plain `keras.models.load_model`, without importing rgd."""
  model = fused_bn.to_keras_batchnorm(model)
  with fileio.atomic_path(path, suffix=".keras") as tmp:
    model.save(tmp)
    faults.kill_point(f"export:{posixpath.basename(path)}")


class TrainingCheckpoints:
  """The training state in DIR (`checkpoints/`), written by every worker, kept by the chief.

  Under MultiWorkerMirroredStrategy every worker must take part in each save, but only the
  chief's files are kept: the others write to `DIR/.worker_<id>-tmp`, deleted after the save
  (rgd.runtime.strategy.checkpoint_dir, TF's multi-worker rule). Every worker restores from the
  chief's latest checkpoint.

  With several input pipelines (`separate_input_state`) each worker's input iterator is a
  different shard and its state is its own, so it is kept per worker in
  `DIR/input_pipeline_<id>/ckpt-N`, next to the chief's `ckpt-N` of the variables, and
  written before it: the latest variables checkpoint then has each worker's input state
  (unless a worker died between the two writes, which restore reports).
  """

  def __init__(self, strategy, directory, max_to_keep, iterator, objects,
               separate_input_state=False):
    self.directory = directory
    self.latest_checkpoint = None
    self._write_dir = strategy_lib.checkpoint_dir(strategy, directory)
    self._max_to_keep = max_to_keep
    self._input = None
    if separate_input_state:
      self._checkpoint = tf.train.Checkpoint(**objects)
      self._input = tf.train.CheckpointManager(
          tf.train.Checkpoint(iterator=iterator),
          posixpath.join(directory, f"input_pipeline_{strategy_lib.worker_id(strategy)}"),
          max_to_keep)
    else:
      self._checkpoint = tf.train.Checkpoint(iterator=iterator, **objects)
    self._manager = None
    if self._write_dir == directory:
      self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep)

  def restore(self):
    """Restores the newest of the chief's checkpoints that can be read; False when there is
    none.

    A checkpoint damaged after it was listed (a truncated data file, a missing index, a bad
    copy from a bucket) is skipped with a warning naming it and the one used instead; restoring
    a complete one overwrites every object, so an earlier partial read leaves nothing behind.
    """
    state = tf.train.get_checkpoint_state(self.directory)
    paths = list(state.all_model_checkpoint_paths) if state else []
    tried = []
    for path in reversed(paths):
      try:
        self._restore(path)
      except Exception as e:  # pylint: disable=broad-except
        # A damaged file surfaces as OpError, ValueError, IndexError ("Read less bytes than
        # requested"), AssertionError (objects not matched)...: all mean "not restorable".
        tried.append(path)
        logging.warning("Cannot restore %s (%s: %s); trying an older checkpoint.", path,
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        continue
      if tried:
        logging.warning("Resumed from %s instead of the damaged %s.", path, ", ".join(tried))
      self.latest_checkpoint = path
      return True
    if tried:
      raise CheckpointError(f"none of the checkpoints {tried} can be restored; move them away "
                            "to start afresh")
    return False

  def _restore(self, path):
    self._checkpoint.restore(path).assert_existing_objects_matched()
    if self._input is not None:
      number = path.rsplit("-", 1)[-1]
      input_path = posixpath.join(self._input.directory, f"ckpt-{number}")
      if not tf.io.gfile.exists(input_path + ".index"):
        raise CheckpointError(f"{input_path}: this worker's input state for {path} is missing (the "
                              "worker stopped between the two writes)")
      self._input.checkpoint.restore(input_path).assert_existing_objects_matched()

  def save(self, checkpoint_number):
    if self._input is not None:
      self._input.save(checkpoint_number=checkpoint_number)
    if self._manager is not None:
      options = None
      if faults.armed():  # runs after the files are written, before the state file lists them
        options = tf.train.CheckpointOptions(experimental_write_callbacks=[
            lambda: faults.kill_point(f"checkpoint:{checkpoint_number}")])
      self.latest_checkpoint = self._manager.save(checkpoint_number=checkpoint_number,
                                                  options=options)
      return
    # Non-chief: the same save into a temporary directory, then deleted.
    tf.io.gfile.makedirs(self._write_dir)
    tf.train.CheckpointManager(self._checkpoint, self._write_dir, 1).save(
        checkpoint_number=checkpoint_number)
    tf.io.gfile.rmtree(self._write_dir)
