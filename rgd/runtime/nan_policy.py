"""What a training step with a non-finite loss or gradient does: `NanPolicy`, the one owner of
`train_and_evaluate.nan_policy`. The loop skeleton (rgd.runtime.loop) applies it after every
step of the classifier and of the corruption networks (always 'stop' there); EDM's step replaces
non-finite gradients itself (rgd.edm.training.nan_to_num), as NVlabs/edm does.

  'stop'       (default) the loop stops at that step, before anything of its state is saved or
               exported, naming the step and the last good checkpoint (exit status 3).
  'skip_step'  that step changes nothing (below); the skipped steps are counted cumulatively in
               TensorBoard (`skipped_steps`), and the run stops with exit status 3 after
               `max_consecutive_skips` skipped steps in a row: a run that is NaN at every step
               does not spin to the end and report success.

With 'skip_step', a step whose loss or gradients are not finite changes nothing.

Some large-scale trainers skip such a step instead of stopping (PaLM, Chowdhery et al. 2022,
Sec. 5.1, skipped batches around loss spikes; Keras' LossScaleOptimizer skips the update of a
non-finite step). The decision is taken inside the replica step, on a flag all-reduced over the
replicas so that every replica takes the same branch:
  * the optimizer update (weights and slots) runs under a `tf.cond`; a skipped step only
    advances `optimizer.iterations`, so step numbers, the learning-rate schedule, the attack
    seeds and the input pipeline stay those of an uninterrupted run;
  * the BatchNorm moving statistics, which the training forward pass has already moved, are put
    back to their values before the step (a select, on a few small vectors);
  * the weight average (rgd.runtime.weight_average) is not updated (`make_distributed_step`).
Distribution strategies do not allow a `merge_call` (which `optimizer.apply` makes) inside a
`tf.cond` in replica context, so where the strategy needs merge calls (MirroredStrategy), the
cond runs in cross-replica context, as keras' LossScaleOptimizer._tf_apply does
(keras/src/optimizers/loss_scale_optimizer.py).
"""
import math

import tensorflow as tf

from rgd.errors import ConfigError, NonFiniteError, TooManySkippedSteps
from rgd.runtime import metric_names as names

POLICIES = ("stop", "skip_step")


class NanPolicy:
  """Reads the per-step flags the trainer returns and decides: log, skip or stop.

  `trainer_skips` tells the trainer to build the skipping step; `after_step(out, step,
  last_checkpoint)` takes the step's fetched metrics and returns what the loop should add to
  its sums, or raises NonFiniteError / TooManySkippedSteps (exit status 3).
  """

  def __init__(self, mode="stop", max_consecutive_skips=100):
    if mode not in POLICIES:
      raise ConfigError(f"train_and_evaluate.nan_policy={mode!r}: expected one of {POLICIES}")
    if int(max_consecutive_skips) < 1:
      raise ConfigError("train_and_evaluate.max_consecutive_skips must be >= 1, got "
                       f"{max_consecutive_skips}")
    self.mode = mode
    self.max_consecutive_skips = int(max_consecutive_skips)
    self.consecutive = 0
    self._skipped = None

  def checkpoint_objects(self):
    """{'skipped_steps': variable} under 'skip_step' (create in the strategy's scope), so that
    the cumulative count survives a resume; {} under 'stop' (older checkpoints stay
    restorable)."""
    if self.mode != "skip_step":
      return {}
    if self._skipped is None:
      self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    return {"skipped_steps": self._skipped}

  @property
  def skipped_total(self):
    return 0 if self._skipped is None else int(self._skipped.numpy())

  @property
  def trainer_skips(self):
    return self.mode == "skip_step"

  def after_step(self, out, step, last_checkpoint):
    out = dict(out)
    skipped = out.pop(names.SKIPPED, 0.0) > 0.5
    nonfinite_grads = out.pop(names.NONFINITE_GRADIENTS, 0.0) > 0
    if skipped:
      self.checkpoint_objects()["skipped_steps"].assign_add(1)
      self.consecutive += 1
      if self.consecutive >= self.max_consecutive_skips:
        raise TooManySkippedSteps(
            f"step {step}: {self.consecutive} consecutive steps had a non-finite loss or "
            f"gradients and were skipped (nan_policy='skip_step', max_consecutive_skips="
            f"{self.max_consecutive_skips}); stopped. Last good checkpoint: "
            f"{last_checkpoint or 'none'}.")
      return {}  # its NaN loss stays out of the logged means
    self.consecutive = 0
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if nonfinite_grads:
      bad.append("gradients")
    if bad:  # 'stop' (under 'skip_step' the trainer has already skipped such a step)
      raise NonFiniteError(
          f"step {step}: non-finite {', '.join(bad)}; stopped without checkpointing or "
          f"exporting this state. Last good checkpoint: {last_checkpoint or 'none'} (re-running "
          "resumes from it; lower the learning rate or check the data first).")
    return out


def all_finite(loss, grads):
  """Scalar bool: this replica's loss and every gradient are finite."""
  flags = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
  return tf.logical_and(tf.math.is_finite(loss), tf.reduce_all(tf.stack(flags)))


def agreed(ok):
  """`ok` of every replica (all-reduced), in replica context: one scalar all-reduce."""
  ctx = tf.distribute.get_replica_context()
  bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(ok, tf.float32))
  return tf.equal(bad, 0.0)


def apply_if(ok, optimizer, grads, variables):
  """`optimizer.apply(grads, variables)` when `ok` (the same on every replica), else only
  `optimizer.iterations += 1`. Call in replica context."""
  def apply():
    optimizer.apply(grads, variables)

  def skip():
    optimizer.iterations.assign_add(1)

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(ok, apply, skip)
    return

  def cross_replica(distribution, ok):
    ok = distribution.experimental_local_results(ok)[0]  # the same on every replica
    tf.cond(ok, lambda: distribution.extended.call_for_each_replica(apply), skip)
  tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok,))


def keep_if_skipped(ok, variables, saved):
  """Puts `variables` (BN statistics) back to `saved` when the step is skipped."""
  for v, s in zip(variables, saved):
    v.assign(tf.where(ok, v.value, s))
