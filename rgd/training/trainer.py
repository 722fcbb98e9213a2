"""The Keras model that owns the robust training step (keras-io "custom train_step" pattern).

`RobustTrainer.train_step(batch)` is written for one replica and reads the same for every
objective (the protocol of rgd.training.objectives): corrupt (the objective's corruption
stage, if any), losses (the objective's parts; its attack runs inside, unrecorded), scale (for
the *global* batch, plus weight decay on conv/dense weights only, not BN), apply.
`rgd.train` runs it under any `tf.distribute` strategy and updates the weight average after it.
"""
import keras
import tensorflow as tf

from rgd.runtime import seeds
from rgd.runtime import metric_names as names, nan_policy
from rgd.training.objectives import base as objective_base
from rgd.attacks import losses
from rgd.data.datasets import to_float
from rgd.models.common import batchnorm_statistics


def decayed_variables(model):
  """Conv and dense kernels and biases; never BN scales or offsets. DeepMind's
  `utils.weight_decay` matches parameter names `.*w$` and `.*b$` and skips `.*batchnorm.*`, so
  the logits bias is decayed too (deepmind-research adversarial_robustness/jax/utils.py)."""
  return [v for v in model.trainable_variables if v.path.endswith(("kernel", "bias"))]


class RobustTrainer(keras.Model):
  """Holds the network and the objective; `train_step` is the step (the weight average is
  updated after it, by `make_distributed_step`).

  Metrics come back from `train_step` as per-replica *sums* (loss parts, correct counts, the
  example count); the loop reduces them over replicas and divides, which is exact for any
  number of replicas.
  """

  def __init__(self, network, objective, global_batch_size, weight_decay=5e-4,
               seed=0, skip_nonfinite=False, **kwargs):
    super().__init__(**kwargs)
    self.network = network
    self.objective = objective
    self.global_batch_size = int(global_batch_size)
    self.weight_decay = float(weight_decay)
    self.seed = int(seed)
    self.skip_nonfinite = bool(skip_nonfinite)  # NanPolicy.trainer_skips (rgd.runtime.nan_policy)

  def call(self, images, training=False):
    return self.network(images, training=training)

  def weight_decay_loss(self):
    """0.5 * wd * sum ||w||^2 over conv/dense weights (coupled L2, as DeepMind's experiment)."""
    if not self.weight_decay:
      return tf.constant(0.0)
    return 0.5 * self.weight_decay * tf.add_n(
        [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed_variables(
            self.network)])

  def attack_start(self, batch_size):
    """Stateless seed of this step, and this replica's rows of the global batch: the attack's
    random start is drawn for the global batch and sliced, so a resumed run repeats the same
    noise and the update does not depend on how many replicas share the batch."""
    ctx = tf.distribute.get_replica_context()
    replica = tf.cast(ctx.replica_id_in_sync_group if ctx is not None else 0, tf.int32)
    seed = seeds.key(self.seed, "attack", self.optimizer.iterations)
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return seed, (replica * batch_size, num_replicas * batch_size)

  def network_fns(self):
    """(attack_fn, clean_fn, train_fn): the network as the attack, TRADES' clean term and the
    updating pass call it (`objectives.Passes`; rgd/training/objectives/adversarial.py). In DeepMind's mode the first two run with
    batch statistics, which moves the BN moving averages as a side effect; `train_fn` first puts
    them back, so that only the training pass updates them."""
    net = self.network
    train = lambda x: net(x, training=True)
    if not self.objective.batch_stats_attack:
      return (lambda x: net(x, training=False)), train, train
    stats = batchnorm_statistics(net)
    saved = [tf.identity(v.value) for v in stats]

    def train_fn(x):
      for v, s in zip(stats, saved):
        v.assign(s)
      return train(x)
    return train, train, train_fn

  def scaled_loss(self, total):
    """The replica's share of the global-batch loss: the sum over this replica's examples / the
    global batch (summing the replicas' gradients, what the optimizer's all-reduce does, gives
    the global-batch mean), plus 1/R of the decay term, so it is counted once."""
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    loss = tf.reduce_sum(total) / self.global_batch_size
    return loss + self.weight_decay_loss() / tf.cast(num_replicas, tf.float32)

  def train_step(self, batch):
    images, labels = batch["image"], batch["label"]
    if images.dtype == tf.uint8:  # converted here, on the device (rgd.data.datasets.make_train_dataset)
      images = to_float(images)
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if self.skip_nonfinite:  # restored if this step is skipped
      bn_stats = batchnorm_statistics(self.network)
      bn_saved = [tf.identity(v.value) for v in bn_stats]
    attack_fn, clean_fn, train_fn = self.network_fns()
    seed, init_slice = self.attack_start(tf.shape(images)[0])
    batch = objective_base.StepBatch(images, labels, seed, init_slice)
    batch = self.objective.corrupt(attack_fn, batch)  # seed 003's stage; identity without one
    with tf.GradientTape() as tape:
      out = self.objective.losses(
          objective_base.Passes(attack_fn, clean_fn, train_fn, tape), batch)
      loss = self.scaled_loss(out.parts[names.TOTAL])
    variables = self.network.trainable_variables
    grads = tape.gradient(loss, variables)
    logs = {}
    if self.skip_nonfinite:
      ok = nan_policy.agreed(nan_policy.all_finite(loss, grads))
      nan_policy.apply_if(ok, self.optimizer, grads, variables)
      nan_policy.keep_if_skipped(ok, bn_stats, bn_saved)
      # Summed over replicas by the loop: 1 for a skipped step.
      logs[names.SKIPPED] = (1.0 - tf.cast(ok, tf.float32)) / tf.cast(num_replicas, tf.float32)
    else:
      self.optimizer.apply(grads, variables)
      # 1 where this replica's gradients hold a NaN/Inf: one reduction over memory the update
      # reads anyway; the loop stops on it before anything is saved (rgd.train).
      logs[names.NONFINITE_GRADIENTS] = 1.0 - tf.cast(tf.reduce_all(tf.stack(
          [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])), tf.float32)

    hard = tf.argmax(labels, axis=1, output_type=tf.int32)
    logs.update({name: tf.reduce_sum(value) for name, value in out.parts.items()})
    logs[names.COUNT] = tf.cast(tf.shape(images)[0], tf.float32)
    for name, logits in ((names.CLEAN_CORRECT, out.clean_logits),
                         (names.ADV_CORRECT, out.adv_logits)):
      if logits is not None:
        logs[name] = tf.reduce_sum(
            tf.cast(tf.logical_not(losses.misclassified(logits, hard)), tf.float32))
    return logs


def make_distributed_step(strategy, trainer, weight_average, jit_compile=False):
  """A tf.function running `trainer.train_step` on every replica, summing the returned metric
  sums over replicas, then updating the weight average in cross-replica context (where a BN
  statistic reads as its value aggregated over replicas)."""
  replica_step = trainer.train_step
  if jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
    replica_step = tf.function(trainer.train_step, jit_compile=True)

  @tf.function
  def step(batch):
    per_replica = strategy.run(replica_step, args=(batch,))
    logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}
    step_number = trainer.optimizer.iterations - 1
    if trainer.skip_nonfinite:  # a skipped step leaves the average alone too
      logs[names.EMA_DECAY] = tf.cond(logs[names.SKIPPED] > 0.5, lambda: tf.constant(0.0),
                                  lambda: weight_average.update(step_number))
    else:
      logs[names.EMA_DECAY] = weight_average.update(step_number)
    return logs
  return step
