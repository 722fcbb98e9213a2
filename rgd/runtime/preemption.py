"""SIGTERM (a preemption notice, `kill`) asks the training loop to checkpoint the step it has
reached and stop with exit status 0; re-running the same command resumes from that checkpoint.

One process: `PreemptionFlag`, a SIGTERM handler that sets a flag the loop reads after each step.

Several workers (MultiWorkerMirroredStrategy): the notice reaches one host only (a spot VM's
shutdown, `kill` on one pod). A worker that stopped on its own would leave the others blocked in
the next step's collectives, and its checkpoint save needs them anyway (every worker takes part
in a save, rgd.runtime.checkpointing). `CoordinatedPreemption` therefore all-reduces each
worker's flag after every step: all workers learn of any notice at the same step, checkpoint it
together and stop.

Why not `tf.distribute.experimental.PreemptionCheckpointHandler` (TF 2.21,
tensorflow/python/distribute/failure_handling/failure_handling.py), which TF made for this:
- On a GCP CPU VM it does nothing: `__init__` only logs "does not support usage with TPU or CPU
  device on GCP" (lines 511-521) and `run` calls the step unguarded (lines 887-891), with no
  SIGTERM handler installed. rgd's multi-worker runs use RING collectives for CPU hosts
  (rgd.runtime.strategy), and a run there would lose its preemption checkpoint.
- Which platform it is on is decided by an HTTP request to the GCE metadata server
  (failure_handling_util.py `on_gcp`, 5 s timeout), so the same job behaves differently by host.
  On a GCE GPU VM it polls the maintenance event instead of handling SIGTERM (lines 188-191;
  `_start_watching_for_signal` only without a watcher function, lines 642-645).
- It restores the newest checkpoint itself when built (`restore_or_initialize`, line 594), without
  rgd's fallback past a damaged checkpoint, and adds its own `_checkpointed_runs` counter to the
  checkpoint it is given (lines 584-592), so rgd's earlier checkpoints would no longer match
  `assert_existing_objects_matched`.
- It saves at the start of the *next* `run` call and, with an `exit_fn` that returns, goes on to
  run that step after the save (`_exit_fn()` at line 1131, then
  `_run_for_multi_worker_mirrored` runs the step, lines 907-909): stopping
  cleanly means raising out of `exit_fn`.
Each point has a workaround but together they leave little of the handler in use; one small
all-reduce per step is simple, the same on every platform, and its cost is a small fraction of a
training step (docs/multi_worker.md).
"""
import signal

from absl import logging
import tensorflow as tf

from rgd.runtime import strategy as strategy_lib


class PreemptionFlag:
  """Set by SIGTERM: the loop then checkpoints at the end of the step and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Received signal %d: will checkpoint and stop after this step.", signum)
    self.requested = True

  def should_stop(self):
    """Whether to checkpoint this step and stop; called once after every step."""
    return self.requested

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


class CoordinatedPreemption(PreemptionFlag):
  """This worker's SIGTERM flag, agreed with every other worker after each step.

  `should_stop` is a collective: every worker must call it once after every step (the loop
  does), and all of them get the same answer at the same step.
  """

  def __init__(self, strategy):
    super().__init__()
    self._num_workers = strategy_lib.input_pipeline(strategy)[0]
    self._worker = strategy_lib.worker_id(strategy)
    self._local_replicas = strategy_lib.local_replicas(strategy)
    self._notices = tf.function(lambda own: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(own,)), axis=None))

  def should_stop(self):
    # Worker k contributes a one-hot row at k from each of its replicas: the sum names the
    # workers that received a notice.
    own = tf.one_hot(self._worker, self._num_workers) * float(self.requested)
    notices = self._notices(own).numpy() / self._local_replicas
    workers = [k for k, n in enumerate(notices) if n > 0]
    if workers:
      logging.warning("SIGTERM on worker(s) %s: all %d workers checkpoint this step and stop.",
                      ", ".join(map(str, workers)), self._num_workers)
    return bool(workers)


def for_strategy(strategy):
  """`CoordinatedPreemption` when several workers train together, else `PreemptionFlag`."""
  if strategy_lib.input_pipeline(strategy)[0] > 1:
    return CoordinatedPreemption(strategy)
  return PreemptionFlag()
