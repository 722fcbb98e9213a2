"""Projected gradient ascent composed from parts (the DeepMind `attacks.py` design).

    attack = PGD(optimizer=SignGradient(2/255), num_steps=10,
                 initialize_fn=linf_uniform_init(8/255), project_fn=linf_project_fn(8/255),
                 norm="linf", eps=8/255, loss_fn=ce_loss)
    x_adv = attack(model_fn, x, labels, seed)                       # rgd/attacks/protocol.py
    x_adv = attack(model_fn, x, target, seed, loss_fn=kl_loss)      # another loss

`model_fn(x) -> logits`; `loss_fn(logits, labels) -> [B]` is maximised. All attack arithmetic
is float32, also when the model computes in bf16.
"""
import tensorflow as tf

from rgd.attacks import initializers, losses, optimizers, projections, protocol
from rgd.errors import ConfigError


def loss_and_grad(model_fn, loss_fn, x, labels):
  """Per-example loss [B] and its gradient w.r.t. x (examples are independent)."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    logits = tf.cast(model_fn(x), tf.float32)
    loss = loss_fn(logits, labels)
  # A non-scalar target: the tape sums it, i.e. per-example gradients.
  return loss, tape.gradient(loss, x), logits


class PGD(protocol.Attack):
  """`num_steps` of ascent from `initialize_fn`, projected by `project_fn` after every step.

  With `keep_best` the point of highest loss seen is returned (per example), as robust
  evaluation wants; without it the attack is a training attack (`last_iterate`, protocol.py):
  one run on every row, returning the last iterate, as TRADES/PGD-AT training use.
  `loss_fn` is the loss maximised when the call gives none; `norm` and `eps` name the threat
  model that `project_fn` enforces (the cascade checks its results against them);
  `num_restarts` runs from independent starts (protocol.run_until_fooled).
  """

  takes_loss_fn = True

  def __init__(self, optimizer, num_steps, initialize_fn=None, project_fn=None,
               keep_best=True, keep_misclassified=False, *, loss_fn=None, norm=None, eps=None,
               name="pgd", num_restarts=1):
    self.optimizer = optimizer
    self.num_steps = int(num_steps)
    self.initialize_fn = initialize_fn or initializers.zero_init()
    self.project_fn = project_fn or projections.box_project_fn()
    self.keep_best = keep_best
    self.last_iterate = not keep_best
    # With integer labels: the first iterate the model misclassifies wins over any later one of
    # higher loss. A targeted loss (MultiTargeted's z_t - z_y) can fall while the run passes
    # through a point misclassified as another class; that point is an adversarial example.
    self.keep_misclassified = keep_misclassified
    self.loss_fn = loss_fn
    if norm is not None:
      protocol.check_norm(norm, eps)
    self.norm, self.eps = norm, None if eps is None else float(eps)
    self.name = name
    self.num_restarts = int(num_restarts)
    if self.last_iterate and self.num_restarts != 1:
      raise ConfigError(f"{name}: a last-iterate (training) attack runs once, not "
                        f"{num_restarts} times")

  def num_runs(self, num_classes):
    del num_classes
    return self.num_restarts

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None, init_slice=None):
    """One run from `seeds` ([2], or [B, 2] per example). `init_slice=(offset, total)`: draw the
    random start for a batch of `total` examples and use rows offset..offset+B, so that a batch
    split over replicas starts exactly where the whole batch on one device would (training is
    then independent of the replica count). Returns (x_adv, fooled, loss); a training attack
    (`last_iterate`) tracks neither (its target may be soft) and returns (x_last, None, None)."""
    del r
    loss_fn = loss_fn or self.loss_fn
    if loss_fn is None:
      raise ConfigError(f"{self.name}: no loss_fn (give one to PGD or to the call)")
    x0 = tf.cast(tf.convert_to_tensor(x0), tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seeds), tf.int32)
    if init_slice is None:
      delta = self.initialize_fn(x0, seed)
    else:
      offset, total = init_slice
      full = self.initialize_fn(tf.zeros(tf.concat([[total], tf.shape(x0)[1:]], 0)), seed)
      delta = full[offset:offset + tf.shape(x0)[0]]
    x = self.project_fn(x0 + delta, x0)
    state = self.optimizer.init(x)
    best = (x, tf.fill(tf.shape(x0)[:1], -float("inf")), tf.zeros(tf.shape(x0)[:1], tf.bool))
    for step in tf.range(self.num_steps):
      loss, grad, logits = loss_and_grad(model_fn, loss_fn, x, labels)
      if self.keep_best:
        best = self._keep(x, loss, logits, labels, *best)
      delta, state = self.optimizer.update(grad, state, step)
      x = self.project_fn(x + delta, x0)
    if not self.keep_best:
      return x, None, None
    logits = tf.cast(model_fn(x), tf.float32)
    best_x, best_loss, best_fooled = self._keep(x, loss_fn(logits, labels), logits, labels, *best)
    return best_x, best_fooled, best_loss

  def _keep(self, x, loss, logits, labels, best_x, best_loss, best_fooled):
    """Per example: the best iterate so far (highest loss; with `keep_misclassified` a
    misclassified one is final), its loss and whether it is misclassified."""
    now = losses.misclassified(logits, labels)
    better = loss > best_loss
    if self.keep_misclassified:
      better = tf.logical_and(tf.logical_not(best_fooled), tf.logical_or(now, better))
    best_x = tf.where(projections.expand(better, x), x, best_x)
    return best_x, tf.where(better, loss, best_loss), tf.where(better, now, best_fooled)


def pgd40_adam_margin(norm="linf", eps=8. / 255):
  """The validation attack of DeepMind's JAX experiment (docs/recipes.md "Validation"): 40 steps of
  Adam on the margin loss, lr 0.1 dropped x0.1 at steps 20 and 30, uniform random start.

  The last rate is 1e-4, not 1e-3: experiment.py builds it as
  `optax.piecewise_constant_schedule(init_value=.1, boundaries_and_scales={20: .1, 30: .01})`,
  and optax multiplies each scale into the value in force (0.1 -> 0.01 -> 0.01 * 0.01)."""
  return PGD(optimizers.Adam(optimizers.piecewise([0.1, 0.01, 1e-4], [20, 30])), 40,
             initializers.uniform_init(norm, eps), projections.project_fn(norm, eps),
             loss_fn=losses.margin_loss, norm=norm, eps=eps, name="pgd40")
