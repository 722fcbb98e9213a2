"""Projected gradient ascent composed from parts (the DeepMind `attacks.py` design).

    attack = PGD(optimizer=SignGradient(2/255), num_steps=10,
                 initialize_fn=linf_uniform_init(8/255), project_fn=linf_project_fn(8/255))
    x_adv = attack(model_fn, ce_loss, x, labels, seed)

`model_fn(x) -> float32 logits`; `loss_fn(logits, labels) -> [B]` is maximised. All attack
arithmetic is float32, also when the model computes in bf16.
"""
import tensorflow as tf

from rgd.attacks import common, initializers, losses, optimizers, projections


def loss_and_grad(model_fn, loss_fn, x, labels):
  """Per-example loss [B] and its gradient w.r.t. x (examples are independent)."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    logits = tf.cast(model_fn(x), tf.float32)
    loss = loss_fn(logits, labels)
  # A non-scalar target: the tape sums it, i.e. per-example gradients.
  return loss, tape.gradient(loss, x), logits


class PGD:
  """`num_steps` of ascent from `initialize_fn`, projected by `project_fn` after every step.

  With `keep_best` the point of highest loss seen is returned (per example), as robust
  evaluation wants; without it the last iterate, as TRADES/PGD-AT training use.
  """

  def __init__(self, optimizer, num_steps, initialize_fn=None, project_fn=None,
               keep_best=True, keep_misclassified=False):
    self.optimizer = optimizer
    self.num_steps = int(num_steps)
    self.initialize_fn = initialize_fn or initializers.zero_init()
    self.project_fn = project_fn or projections.box_project_fn()
    self.keep_best = keep_best
    # With integer labels: the first iterate the model misclassifies wins over any later one of
    # higher loss. A targeted loss (MultiTargeted's z_t - z_y) can fall while the run passes
    # through a point misclassified as another class; that point is an adversarial example.
    self.keep_misclassified = keep_misclassified

  def __call__(self, model_fn, loss_fn, x0, labels, seed=(0, 0), init_slice=None):
    """`init_slice=(offset, total)`: draw the random start for a batch of `total` examples and
    use rows offset..offset+B, so that a batch split over replicas starts exactly where the
    whole batch on one device would (training is then independent of the replica count)."""
    x0 = tf.cast(tf.convert_to_tensor(x0), tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if init_slice is None:
      delta = self.initialize_fn(x0, seed)
    else:
      offset, total = init_slice
      full = self.initialize_fn(tf.zeros(tf.concat([[total], tf.shape(x0)[1:]], 0)), seed)
      delta = full[offset:offset + tf.shape(x0)[0]]
    x = self.project_fn(x0 + delta, x0)
    state = self.optimizer.init(x)
    best_x = x
    best_loss = tf.fill(tf.shape(x0)[:1], -float("inf"))
    fooled = tf.zeros(tf.shape(x0)[:1], tf.bool)
    for step in tf.range(self.num_steps):
      loss, grad, logits = loss_and_grad(model_fn, loss_fn, x, labels)
      if self.keep_best:
        best_x, best_loss, fooled = self._keep(x, loss, logits, labels, best_x, best_loss,
                                               fooled)
      delta, state = self.optimizer.update(grad, state, step)
      x = self.project_fn(x + delta, x0)
    if not self.keep_best:
      return x
    logits = tf.cast(model_fn(x), tf.float32)
    return self._keep(x, loss_fn(logits, labels), logits, labels, best_x, best_loss, fooled)[0]

  def _keep(self, x, loss, logits, labels, best_x, best_loss, fooled):
    """Per example: the best iterate so far (highest loss; a misclassified one is final)."""
    better = loss > best_loss
    if self.keep_misclassified:
      now = losses.misclassified(logits, labels)
      better = tf.logical_and(tf.logical_not(fooled), tf.logical_or(now, better))
      fooled = tf.logical_or(fooled, now)
    best_x = tf.where(projections.expand(better, x), x, best_x)
    return best_x, tf.where(better, loss, best_loss), fooled


class Restarts:
  """Runs `attack` `num_restarts` times; per example keeps the first run that misclassifies,
  otherwise the one with the highest `loss_fn`. Each restart attacks only the points not yet
  fooled (gathered, attacked, scattered back), and draws from per-example seeds (the batch
  seed folded with the row index, or the [B, 2] seeds given; rgd/attacks/common.py), so a
  point's result does not depend on which other points are attacked with it."""

  def __init__(self, attack, num_restarts):
    self.attack = attack
    self.num_restarts = int(num_restarts)

  def __call__(self, model_fn, loss_fn, x0, labels, seed=(0, 0)):
    best_x = tf.cast(x0, tf.float32)
    labels = tf.convert_to_tensor(labels)
    seeds = common.example_seeds(seed, tf.shape(best_x)[0])
    best_loss = tf.fill(tf.shape(best_x)[:1], -float("inf"))
    done = tf.zeros(tf.shape(best_x)[:1], tf.bool)
    for r in range(self.num_restarts):
      idx = tf.where(tf.logical_not(done))[:, 0]
      x0_r, labels_r = tf.gather(tf.cast(x0, tf.float32), idx), tf.gather(labels, idx)
      x = self.attack(model_fn, loss_fn, x0_r, labels_r,
                      common.run_seeds(tf.gather(seeds, idx), r))
      logits = tf.cast(model_fn(x), tf.float32)
      loss = loss_fn(logits, labels_r)
      fooled = losses.misclassified(logits, labels_r)
      take = tf.logical_or(fooled, loss > tf.gather(best_loss, idx))
      at = idx[:, None]
      best_x = tf.tensor_scatter_nd_update(
          best_x, at, tf.where(projections.expand(take, x), x, tf.gather(best_x, idx)))
      best_loss = tf.tensor_scatter_nd_update(
          best_loss, at, tf.where(take, loss, tf.gather(best_loss, idx)))
      done = tf.tensor_scatter_nd_update(done, at, fooled)
    return best_x


def pgd40_adam_margin(norm="linf", eps=8. / 255):
  """The validation attack of DeepMind's JAX experiment (docs/recipes.md "Validation"): 40 steps of
  Adam on the margin loss, lr 0.1 dropped x0.1 at steps 20 and 30, uniform random start.

  The last rate is 1e-4, not 1e-3: experiment.py builds it as
  `optax.piecewise_constant_schedule(init_value=.1, boundaries_and_scales={20: .1, 30: .01})`,
  and optax multiplies each scale into the value in force (0.1 -> 0.01 -> 0.01 * 0.01)."""
  return PGD(optimizers.Adam(optimizers.piecewise([0.1, 0.01, 1e-4], [20, 30])), 40,
             initializers.uniform_init(norm, eps), projections.project_fn(norm, eps))
