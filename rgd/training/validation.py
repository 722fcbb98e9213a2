"""Validation of the weight-averaged model on the held-out images, for the training loop.

`make_validator` returns `run(step) -> (clean accuracy, robust accuracy)` with `run.robust_name`
naming the second number in TensorBoard and `run.score(clean, robust)` the number that selects
model.keras. What is checked is the objective's choice (`objective.validation()`, the protocol of
rgd.training.objectives), one of:
  * `pgd40_check`: PGD-40 (Adam, margin loss) as DeepMind's experiment validates;
  * `certified_check`: certified accuracy at the training eps (seed 004). The averaged
    model's power iterates are not averaged (they are not weights): before certifying, its
    iterates are run to convergence (`refresh=True`, so that model.keras is exported with
    converged iterates), and the certificate itself uses the certified SVD/FFT bounds
    (rgd.certified.certificate), which do not depend on iterates at all. l_inf-dist Nets and
    SortNets first re-estimate their mean shifts with the inference function over the training
    images (`train_images`, which rgd.data.recalibration binds per recipe: SortNet's
    `update_bn` before every test; none for L_inf-dist-net-v2), so that the model validated,
    exported and certified carries them.
"""
import math

import tensorflow as tf

from rgd.attacks import losses, pgd
from rgd.certified import certificate, linf_dist
from rgd.data import datasets
from rgd.runtime import seeds, strategy as strategy_lib


def make_validator(strategy, avg_network, objective, images, labels, batch_size, seed,
                   train_images=None):
  """The validator `objective.validation()` asks for (module docstring). `train_images`: the
  images of the mean-shift recalibration, or an rgd.data.recalibration.Recalibration, or None."""
  spec = objective.validation()
  run = spec.check(strategy, avg_network, spec.threat, images, labels, batch_size, seed,
                   train_images)
  run.score = (lambda clean, robust: robust) if spec.selects_robust else (
      lambda clean, robust: clean)
  return run


def pgd40_check(strategy, avg_network, threat, images, labels, batch_size, seed,
                train_images=None):
  """`make_pgd40_validator` at `threat` (the signature of every check)."""
  del train_images
  return make_pgd40_validator(strategy, avg_network, threat.norm, threat.eps, images, labels,
                              batch_size, seed)


def certified_check(strategy, avg_network, threat, images, labels, batch_size, seed,
                    train_images=None):
  """`make_certified_validator` at the threat's eps."""
  del strategy, seed
  return make_certified_validator(avg_network, threat.eps, images, labels, batch_size,
                                  train_images)


def make_certified_validator(avg_network, eps, images, labels, batch_size=256,
                             train_images=None):
  """Clean and certified accuracy at `eps` (seed 004's validation)."""

  def run(step):
    recalibrate(avg_network, train_images, step, batch_size)
    result = certificate.certify(avg_network, images, labels, batch_size, refresh=True,
                                 radii=[eps], bisection_steps=0)  # exact flags at eps
    return float(result["correct"].mean()), certificate.certified_accuracy(result, eps)
  run.robust_name = "certified"
  return run


def recalibrate(avg_network, train_images, step, batch_size):
  """Re-estimates the mean shifts of an l_inf-dist Net / SortNet on `train_images` (an array,
  or a Recalibration giving this step's images and batch size); nothing for other models or
  without images."""
  if train_images is None or not linf_dist.is_linf_dist_model(avg_network):
    return
  if hasattr(train_images, "images"):
    batch_size = train_images.batch_size or batch_size
    train_images = train_images.images(step)
  linf_dist.recalibrate(avg_network, train_images, batch_size)


def make_pgd40_validator(strategy, avg_network, norm, eps, images, labels, batch_size, seed):
  """PGD-40 (Adam, margin loss; DeepMind's experiment.py `_eval_batch`, docs/recipes.md
  "Validation") and clean accuracy of the averaged model on the held-out images."""
  batch_size = min(batch_size, int(math.ceil(len(images) / strategy.num_replicas_in_sync)) *
                   strategy.num_replicas_in_sync)
  batch_size -= batch_size % strategy.num_replicas_in_sync
  dataset = datasets.make_eval_dataset(images, labels, batch_size)
  attack = pgd.pgd40_adam_margin(norm, eps)
  model_fn = lambda x: avg_network(x, training=False)

  def replica_fn(batch, index):
    ctx = tf.distribute.get_replica_context()
    x, y, mask = batch["image"], batch["label"], tf.cast(batch["mask"], tf.float32)
    clean_ok = tf.logical_not(losses.misclassified(model_fn(x), y))
    key = seeds.key(seed, "validation", index, sub=ctx.replica_id_in_sync_group)
    x_adv = attack(model_fn, x, y, key)
    adv_ok = tf.logical_not(losses.misclassified(model_fn(x_adv), y))
    return (tf.reduce_sum(tf.cast(clean_ok, tf.float32) * mask),
            tf.reduce_sum(tf.cast(tf.logical_and(clean_ok, adv_ok), tf.float32) * mask))

  @tf.function
  def eval_step(batch, index):
    out = strategy.run(replica_fn, args=(batch, index))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in out]

  def run(step):
    del step
    clean = robust = 0.0
    for i, batch in enumerate(dataset):
      stacked = strategy_lib.stack_for_replicas(strategy, batch)
      c, r = eval_step(strategy_lib.distribute_stacked(strategy, stacked),
                       tf.constant(i, tf.int32))
      clean += float(c)
      robust += float(r)
    return clean / len(images), robust / len(images)
  run.robust_name = "robust_pgd40"
  return run
