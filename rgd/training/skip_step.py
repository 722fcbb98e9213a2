"""`nan_policy='skip_step'`: a step whose loss or gradients are not finite changes nothing.

Some large-scale trainers skip such a step instead of stopping (PaLM, Chowdhery et al. 2022,
Sec. 5.1, skipped batches around loss spikes; Keras' LossScaleOptimizer skips the update of a
non-finite step). The decision is taken inside the replica step, on a flag all-reduced over the
replicas so that every replica takes the same branch:
  * the optimizer update (weights and slots) runs under a `tf.cond`; a skipped step only
    advances `optimizer.iterations`, so step numbers, the learning-rate schedule, the attack
    seeds and the input pipeline stay those of an uninterrupted run;
  * the BatchNorm moving statistics, which the training forward pass has already moved, are put
    back to their values before the step (a select, on a few small vectors);
  * the weight average (rgd.training.weight_average) is not updated (`make_distributed_step`).
Distribution strategies do not allow a `merge_call` (which `optimizer.apply` makes) inside a
`tf.cond` in replica context, so where the strategy needs merge calls (MirroredStrategy), the
cond runs in cross-replica context, as keras' LossScaleOptimizer._tf_apply does
(keras/src/optimizers/loss_scale_optimizer.py).
"""
import tensorflow as tf


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
