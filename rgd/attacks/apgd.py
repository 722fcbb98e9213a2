"""AutoPGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Sec. 3 and Alg. 1), as in AutoAttack's `autopgd_base.py`.

    attack = APGD("linf", 8 / 255, loss="ce", num_steps=100, num_restarts=5)
    x_adv = attack(model_fn, x, labels, seed)          # rgd/attacks/protocol.py

* Step: starts at 2 * eps, momentum 0.75 on the projected step (Eq. 2 of the paper).
* Checkpoints w_j = ceil(p_j * N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
  - 0.03, 0.06); AutoAttack computes them in integers (`checkpoints(N)`).
* At a checkpoint the step is halved and the iterate restarts from the best point when the loss
  went up in at most rho = 75% of the steps since the last checkpoint (condition 1), or when the
  step was not halved at the last checkpoint and the best loss has not improved since (cond. 2).
* Restarts run only on the points not yet fooled; a fooled point keeps its misclassified iterate.
* `APGDTargeted` is APGD-T: targeted DLR towards the 2nd, 3rd, ... largest clean logit.

Arithmetic is float32 whatever the model computes in.
"""
import tensorflow as tf

from rgd.attacks import common, losses, projections, protocol
from rgd.attacks.common import logits_of, target_class
from rgd.errors import ConfigError
from rgd.attacks.projections import expand, per_example_norm

# AutoAttack's constants (Croce & Hein 2020, Sec. 3.2; autopgd_base.py).
INITIAL_STEP = 2.0          # eta^(0) = 2 * eps
MOMENTUM = 0.75             # alpha
RHO = 0.75                  # condition 1 threshold
FIRST_CHECKPOINT = 0.22     # p_1
CHECKPOINT_DECREASE = 0.03  # interval shrinks by 3% of N ...
MIN_CHECKPOINT = 0.06       # ... down to 6% of N


def checkpoints(num_steps):
  """Iterations (1-based counts) after which APGD checks its step size; AutoAttack's integer
  version of p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): 100 -> [22, 41, 57, 70, ...]."""
  interval = max(int(FIRST_CHECKPOINT * num_steps), 1)
  decrease = max(int(CHECKPOINT_DECREASE * num_steps), 1)
  minimum = max(int(MIN_CHECKPOINT * num_steps), 1)
  out, at = [], interval
  while at <= num_steps:
    out.append(at)
    interval = max(interval - decrease, minimum)
    at += interval
  return out


def random_start(norm, eps, x0, seed):
  """AutoAttack's start: a random point on the boundary of the ball (Linf: uniform noise scaled
  to Linf norm eps; L2: Gaussian direction of norm eps), clipped to [0, 1]. `seed`: [2] or
  per-example [B, 2] (common.py); each row's noise comes from its own seed."""
  seeds = common.example_seeds(seed, tf.shape(x0)[0])
  if norm == "linf":
    t = common.uniform(seeds, x0.shape[1:], -1.0, 1.0)
  else:
    t = common.normal(seeds, x0.shape[1:])
  t /= expand(per_example_norm(t, norm), t) + 1e-12
  return tf.clip_by_value(x0 + eps * t, 0.0, 1.0)


class APGD(protocol.Attack):
  """AutoPGD on one loss. `loss` is 'ce', 'dlr' or a function (logits, labels) -> [B]; a call's
  `loss_fn` replaces it."""

  takes_loss_fn = True

  def __init__(self, norm, eps, loss="ce", num_steps=100, num_restarts=1, rho=RHO,
               momentum=MOMENTUM, initial_step=INITIAL_STEP):
    protocol.check_norm(norm, eps)
    self.norm, self.eps = norm, float(eps)
    if isinstance(loss, str):
      if loss not in ("ce", "dlr"):
        raise ConfigError(f"Unknown APGD loss {loss!r}; expected 'ce', 'dlr' or a function")
      self.name = f"apgd-{loss}"
      loss = losses.ce_loss if loss == "ce" else losses.dlr_loss
    else:
      self.name = "apgd"
    self.loss_fn = loss
    self.num_steps, self.num_restarts = int(num_steps), int(num_restarts)
    self.rho, self.momentum, self.initial_step = float(rho), float(momentum), float(initial_step)
    self.project = projections.project_fn(norm, self.eps)
    ckpt = checkpoints(self.num_steps)
    # Interval length ending at each iteration that is a checkpoint, 0 elsewhere.
    lengths = [0] * self.num_steps
    for prev, at in zip([0] + ckpt[:-1], ckpt):
      lengths[at - 1] = at - prev
    self._interval_at = tf.constant(lengths, tf.float32)

  def _ascent(self, grad):
    if self.norm == "linf":
      return tf.sign(grad)
    return grad / (expand(per_example_norm(grad, "l2"), grad) + 1e-12)

  def _loss_grad(self, model_fn, loss_fn, x, labels):
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = logits_of(model_fn, x)
      loss = loss_fn(logits, labels)
    return loss, tape.gradient(loss, x), losses.misclassified(logits, labels)

  def run_loss(self, model_fn, loss_fn, x0, labels, seed, trace=False):
    """One run of Alg. 1 on `loss_fn`. Returns (x_adv, fooled, loss): a misclassified iterate
    where one was found, otherwise the iterate of highest loss (and that loss). With `trace`, also a dict of
    per-iteration tensors: `step` (the step size used), `loss` (at the new iterate),
    `reduced` (halved and restarted from the best point at this checkpoint), `x` (the point
    the next step starts from) and `x_best`, and `loss_init` (the loss at the start)."""
    x0 = tf.cast(x0, tf.float32)
    x = random_start(self.norm, self.eps, x0, seed)
    loss, grad, fooled = self._loss_grad(model_fn, loss_fn, x, labels)
    x_best, loss_best, grad_best, x_adv = x, loss, grad, x
    x_prev = x
    step = tf.fill(tf.shape(loss), self.initial_step * self.eps)
    loss_prev = loss
    increases = tf.zeros_like(loss)              # successful steps since the last checkpoint
    loss_best_last_check = loss_best
    reduced_last_check = tf.ones_like(loss, tf.bool)  # AutoAttack starts it at ones
    steps = tf.TensorArray(tf.float32, self.num_steps)
    losses_seen = tf.TensorArray(tf.float32, self.num_steps)
    reductions = tf.TensorArray(tf.bool, self.num_steps)
    xs = tf.TensorArray(tf.float32, self.num_steps)
    x_bests = tf.TensorArray(tf.float32, self.num_steps)
    loss_init = loss
    for i in tf.range(self.num_steps):
      # Eq. 2: z = P(x + eta * ascent); x_new = P(x + alpha (z - x) + (1 - alpha)(x - x_prev)),
      # with alpha = 1 at the first step.
      a = tf.where(i > 0, self.momentum, 1.0)
      z = self.project(x + expand(step, x) * self._ascent(grad), x0)
      x_new = self.project(x + (z - x) * a + (x - x_prev) * (1.0 - a), x0)
      x_prev, x = x, x_new
      if trace:
        steps = steps.write(i, step)
      loss, grad, miscl = self._loss_grad(model_fn, loss_fn, x, labels)
      x_adv = tf.where(expand(miscl, x), x, x_adv)
      fooled = tf.logical_or(fooled, miscl)
      increases += tf.cast(loss > loss_prev, tf.float32)
      loss_prev = loss
      better = loss > loss_best
      x_best = tf.where(expand(better, x), x, x_best)
      grad_best = tf.where(expand(better, x), grad, grad_best)
      loss_best = tf.where(better, loss, loss_best)

      interval = self._interval_at[i]
      reduce = tf.zeros_like(fooled)
      if interval > 0:
        oscillating = increases <= self.rho * interval                     # condition 1
        stalled = tf.logical_and(tf.logical_not(reduced_last_check),      # condition 2
                                 loss_best_last_check >= loss_best)
        reduce = tf.logical_or(oscillating, stalled)
        reduced_last_check = reduce
        loss_best_last_check = loss_best
        step = tf.where(reduce, step / 2.0, step)
        x = tf.where(expand(reduce, x), x_best, x)
        grad = tf.where(expand(reduce, x), grad_best, grad)
        increases = tf.zeros_like(increases)
      if trace:
        losses_seen = losses_seen.write(i, loss)
        reductions = reductions.write(i, reduce)
        xs = xs.write(i, x)
        x_bests = x_bests.write(i, x_best)
    x_out = tf.where(expand(fooled, x0), x_adv, x_best)
    if trace:
      return x_out, fooled, loss_best, dict(step=steps.stack(), loss=losses_seen.stack(),
                                            reduced=reductions.stack(), x=xs.stack(),
                                            x_best=x_bests.stack(), loss_init=loss_init)
    return x_out, fooled, loss_best

  def num_runs(self, num_classes):
    del num_classes
    return self.num_restarts

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    del r
    return self.run_loss(model_fn, loss_fn or self.loss_fn, x0, labels, seeds)


class APGDTargeted(APGD):
  """APGD-T: for each of the `num_target_classes` classes with the 2nd, 3rd, ... largest clean
  logit, `num_restarts` runs on the targeted DLR loss (Croce & Hein 2020, Sec. 3 and App.)."""

  takes_loss_fn = False
  # Targeted DLR needs the 4 largest logits.
  min_classes = 4

  def __init__(self, norm, eps, num_steps=100, num_restarts=1, num_target_classes=9, **kw):
    super().__init__(norm, eps, loss=losses.ce_loss, num_steps=num_steps,
                     num_restarts=num_restarts, **kw)
    self.name = "apgd-t"
    self.num_target_classes = self.num_targets = int(num_target_classes)

  def num_runs(self, num_classes):
    # With K classes there are K - 1 targets.
    return min(self.num_target_classes, num_classes - 1) * self.num_restarts

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    self.check_loss_fn(loss_fn)
    # Target of run r: the (r // restarts + 2)-th largest clean logit of the point, from its
    # own clean logits (one forward pass per run), so any subset of rows can be attacked.
    clean_logits = logits_of(model_fn, x0)
    num_targets = min(self.num_target_classes, clean_logits.shape[-1] - 1)
    target = target_class(clean_logits, r // self.num_restarts, num_targets)
    targeted = lambda logits, y: losses.targeted_dlr_loss(logits, y, target)
    return self.run_loss(model_fn, targeted, x0, labels, seeds)
