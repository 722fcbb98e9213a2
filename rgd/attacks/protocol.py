"""The one attack protocol: every attack (PGD, APGD, APGD-T, MultiTargeted, FAB-T, Square) is
called the same way, in training, in validation and in the evaluation cascade.

    x_adv = attack(model_fn, images, labels, seed, *, loss_fn=None, init_slice=None)

* `model_fn(x) -> logits` [B, K] (any float dtype; attacks compute in float32).
* `images` float32 [B, H, W, C] in [0, 1]; the result has the same shape and never leaves the
  eps-ball of `attack.norm` around `images`, nor [0, 1].
* `labels`: integer classes [B]; a training attack's `loss_fn` may take another target instead
  (TRADES' KL takes the clean probabilities [B, K]).
* `seed`: int32 [2] for the batch, or [B, 2], one per example (common.py): an evaluation
  attack draws each row's randomness from its own seed, so a point's result does not depend on
  the rows attacked with it.
* `loss_fn(logits, labels) -> [B]`, maximised: replaces the loss of an attack that takes one
  (`takes_loss_fn`: PGD, untargeted APGD); the targeted attacks and Square choose their own.
* `init_slice=(offset, total)`: the rows are rows offset.. of a batch of `total` split over
  replicas; every random draw is the one that row gets in the whole batch, so training does not
  depend on the number of replicas.

Attributes: `name` (the stage name of reports), `norm` ('linf' or 'l2'), `eps`,
`num_runs(num_classes)` (restarts times targets), `black_box` (queries logits only, the
gradient-masking check of AutoAttack), `min_classes`, `num_targets` (targeted attacks, else
None), `takes_loss_fn`, `last_iterate`.

Two kinds of attack answer this call:

* Evaluation attacks (`last_iterate = False`): `num_runs` runs (restarts, targets), each on the
  points not yet fooled; a fooled point keeps its misclassified point, any other the point of
  highest loss; points misclassified at `images` come back unchanged (AutoAttack's
  `run_standard_evaluation` and the restart loops of its `autopgd_base.py`). The loop is
  `run_until_fooled` below, the only restart loop of rgd; the evaluation cascade
  (rgd/evaluation/cascade.py) drives the same runs itself through `run`.
* Training attacks (`last_iterate = True`, PGD only): one run on every row from the batch seed
  as given, returning the last iterate, as TRADES (Zhang et al. 2019) and PGD-AT (Madry et al.
  2018) train.

`run(model_fn, r, seeds, x0, labels, loss_fn=None) -> (x_adv, fooled, loss)` is run r on any
subset of rows with the rows' own seeds: its x_adv (inside the ball and the box), whether the
model misclassifies it, and the loss that ranks the runs of a point.
"""
import tensorflow as tf

from rgd.attacks import common, losses
from rgd.attacks.projections import expand
from rgd.errors import ConfigError

NORMS = ("linf", "l2")


class Attack:
  """Base of every attack: the protocol's call and defaults. A subclass sets `name`, `norm`
  and `eps` and defines `run`; with several runs, `num_runs`."""

  name = "attack"
  norm = None
  eps = None
  black_box = False        # only queries the logits (Square)
  min_classes = 2          # the fewest classes its loss is defined for
  num_targets = None       # targeted attacks: the targets asked for
  takes_loss_fn = False    # `loss_fn` may replace its loss
  last_iterate = False     # a training attack (module docstring)

  def num_runs(self, num_classes):
    del num_classes
    return 1

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    raise NotImplementedError

  def check_loss_fn(self, loss_fn):
    if loss_fn is not None and not self.takes_loss_fn:
      raise ConfigError(f"{self.name} chooses its own loss; loss_fn must be None")

  def __call__(self, model_fn, images, labels, seed=(0, 0), *, loss_fn=None, init_slice=None):
    return run_until_fooled(self, model_fn, images, labels, seed, loss_fn=loss_fn,
                            init_slice=init_slice)[0]


def check_norm(norm, eps):
  if norm not in NORMS:
    raise ConfigError(f"Unknown norm {norm!r}; expected 'linf' or 'l2'")
  if not 0.0 < float(eps):
    raise ConfigError(f"eps must be positive, got {eps}")


def _slice_seeds(seed, batch, init_slice):
  """Per-example seeds of the rows; with `init_slice=(offset, total)` those of rows
  offset..offset + batch of the whole batch."""
  if init_slice is None:
    return common.example_seeds(seed, batch)
  offset, total = init_slice
  if tf.convert_to_tensor(seed).shape.rank == 2:
    raise ConfigError("init_slice needs the batch seed [2], not per-example seeds")
  return common.example_seeds(seed, total)[offset:offset + batch]


def run_until_fooled(attack, model_fn, images, labels, seed=(0, 0), loss_fn=None,
                     init_slice=None, subset=True):
  """The protocol's call (module docstring); returns (x_adv, fooled), `fooled` None for a
  training attack.

  Evaluation attacks: up to `attack.num_runs(K)` runs, each on the rows not yet fooled
  (gathered, run, scattered back); the loop stops once every row is fooled. `subset=False` runs
  every row each time (the same result: each row draws from its own seed); XLA needs it, as it
  cannot differentiate through a batch of dynamic size. With one run nothing is gathered:
  the only rows it could leave out are those misclassified at `images`.
  """
  attack.check_loss_fn(loss_fn)
  x0 = tf.cast(tf.convert_to_tensor(images), tf.float32)
  if attack.last_iterate:
    return attack.run(model_fn, 0, seed, x0, labels, loss_fn=loss_fn,
                      init_slice=init_slice)[0], None
  labels = tf.cast(labels, tf.int32)
  seeds = _slice_seeds(seed, tf.shape(x0)[0], init_slice)
  logits = common.logits_of(model_fn, x0)
  num_runs = attack.num_runs(logits.shape[-1])
  subset = subset and num_runs > 1
  fooled = losses.misclassified(logits, labels)
  x_adv = x0
  best_loss = tf.fill(tf.shape(labels), -float("inf"))
  for r in tf.range(num_runs):
    if tf.reduce_all(fooled):
      break
    if subset:
      idx = tf.where(tf.logical_not(fooled))[:, 0]
    else:
      idx = tf.range(tf.shape(labels, out_type=tf.int64)[0])
    x_r, fooled_r, loss_r = attack.run(model_fn, r, common.run_seeds(tf.gather(seeds, idx), r),
                                       tf.gather(x0, idx), tf.gather(labels, idx),
                                       loss_fn=loss_fn)
    was_fooled = tf.gather(fooled, idx)
    take = tf.logical_and(tf.logical_not(was_fooled),
                          tf.logical_or(fooled_r, loss_r > tf.gather(best_loss, idx)))
    at = idx[:, None]
    x_adv = tf.tensor_scatter_nd_update(
        x_adv, at, tf.where(expand(take, x_r), x_r, tf.gather(x_adv, idx)))
    best_loss = tf.tensor_scatter_nd_update(
        best_loss, at, tf.where(take, loss_r, tf.gather(best_loss, idx)))
    fooled = tf.tensor_scatter_nd_update(fooled, at, tf.logical_or(was_fooled, fooled_r))
  return x_adv, fooled
