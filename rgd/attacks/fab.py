"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack", Sec. 3; AutoAttack's `fab_base.py`).

FAB looks for the smallest perturbation that changes the class. At x it linearises
f = z_t - z_y, projects both the iterate and the clean point x0 onto the linearised boundary
{f = 0} intersected with [0, 1] (minimal Linf or L2 step, `min_norm_step`), moves to a convex
combination of the two overshot projections (weight alpha <= alpha_max on the x0 side, overshoot
eta), and after every success steps back towards x0 by beta. A point counts as broken when the
smallest adversarial perturbation found has norm <= eps.

    attack = FABTargeted("linf", 8 / 255, num_steps=100, num_target_classes=9)
    x_adv = attack(model_fn, x, labels, seed)          # rgd/attacks/protocol.py

Points not broken are returned unchanged (FAB's minimal adversarial lies outside the ball).
"""
import tensorflow as tf

from rgd.attacks import common, losses, protocol
from rgd.attacks.common import logits_of, target_class
from rgd.attacks.projections import expand, per_example_norm

# AutoAttack's FAB constants (fab_base.py, the values of Croce & Hein 2020, Sec. 4).
ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9
_UNREACHED = 1e10   # "no adversarial found yet" norm
_FAR = 1e30         # breakpoint of a coordinate that never saturates


def min_norm_step(x, g, need, norm):
  """The smallest d (Linf or L2) with <g, d> >= need and x + d in [0, 1], per example.

  x, g: [B, n]; need: [B] >= 0. For a step size lam the best ascent is d_i = sign(g_i) *
  min(lam * s_i, room_i) with s_i = 1 (Linf) or |g_i| (L2, the KKT point) and room_i the
  distance to the box in the direction of g_i; <g, d(lam)> is increasing and piecewise linear
  in lam with breakpoints room_i / s_i, so sorting them gives the exact lam. When even the
  whole box cannot reach `need` the farthest point of the box is returned.
  """
  a = tf.abs(g)
  room = tf.where(g > 0, 1.0 - x, x)
  room = tf.where(a > 0, room, 0.0)
  s = tf.ones_like(a) if norm == "linf" else a
  brk = tf.where(s > 0, room / tf.maximum(s, 1e-30), _FAR)
  order = tf.argsort(brk, axis=1)
  brk_s = tf.gather(brk, order, batch_dims=1)
  full_s = tf.gather(a * room, order, batch_dims=1)      # gain of a saturated coordinate
  slope_s = tf.gather(a * s, order, batch_dims=1)        # gain per unit lam while unsaturated
  saturated_gain = tf.cumsum(full_s, axis=1)
  slope_after = tf.reduce_sum(slope_s, axis=1, keepdims=True) - tf.cumsum(slope_s, axis=1)
  gain_at_brk = saturated_gain + tf.minimum(brk_s, _FAR) * slope_after
  # m = number of breakpoints below which the gain is still short of `need`.
  m = tf.reduce_sum(tf.cast(gain_at_brk < need[:, None], tf.int32), axis=1)
  n = tf.shape(x)[1]
  prev = tf.maximum(m - 1, 0)
  gain_before = tf.where(m > 0, tf.gather(saturated_gain, prev, batch_dims=1), 0.0)
  slope = tf.where(m > 0, tf.gather(slope_after, prev, batch_dims=1),
                   tf.reduce_sum(slope_s, axis=1))
  lam = tf.where(m < n, (need - gain_before) / tf.maximum(slope, 1e-30), _FAR)
  lam = tf.maximum(lam, 0.0)
  return tf.sign(g) * tf.minimum(lam[:, None] * s, room)


def _project_to_boundary(x, w, value, norm):
  """Minimal step from x (flattened) onto {<w, z - x> + value = 0} within [0, 1]."""
  direction = -tf.sign(value)[:, None] * w
  return min_norm_step(x, direction, tf.abs(value), norm)


class FABTargeted(protocol.Attack):
  """FAB-T: for each of the `num_target_classes` classes with the 2nd, 3rd, ... largest clean
  logit, `num_restarts` runs (the first from x0, the others from a random start)."""

  name = "fab-t"

  def __init__(self, norm, eps, num_steps=100, num_restarts=1, num_target_classes=9,
               alpha_max=ALPHA_MAX, eta=ETA, beta=BETA):
    protocol.check_norm(norm, eps)
    self.norm, self.eps = norm, float(eps)
    self.num_steps, self.num_restarts = int(num_steps), int(num_restarts)
    self.num_target_classes = self.num_targets = int(num_target_classes)
    self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

  def _diff_and_grad(self, model_fn, x, labels, target):
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = logits_of(model_fn, x)
      f = losses.targeted_margin_loss(logits, labels, target)   # z_t - z_y
    return f, tape.gradient(f, x), losses.misclassified(logits, labels)

  def run_target(self, model_fn, x0, labels, target, seed, random_start):
    """One FAB run towards `target` (from x0, or from a random point when the bool tensor
    `random_start` is true); returns (x_adv, fooled, -norm of the best adversarial)."""
    x0 = tf.cast(x0, tf.float32)
    batch = tf.shape(x0)[0]
    flat0 = tf.reshape(x0, [batch, -1])
    best_norm = tf.fill([batch], _UNREACHED)
    x_adv = x0
    # AutoAttack's restarts start from a random point at half the radius eps; each example
    # draws from its own seed (common.py).
    seeds = common.example_seeds(seed, batch)
    if self.norm == "linf":
      t = common.uniform(seeds, x0.shape[1:], -1.0, 1.0)
    else:
      t = common.normal(seeds, x0.shape[1:])
    t /= expand(per_example_norm(t, self.norm), t) + 1e-12
    x = tf.where(random_start, tf.clip_by_value(x0 + 0.5 * self.eps * t, 0.0, 1.0), x0)
    for _ in tf.range(self.num_steps):
      f, g, _ = self._diff_and_grad(model_fn, x, labels, target)
      flat = tf.reshape(x, [batch, -1])
      w = tf.reshape(g, [batch, -1])
      # Linearisation at x: f(z) ~ f + <w, z - x>; at x0 its value is f + <w, x0 - x>.
      d1 = _project_to_boundary(flat, w, f, self.norm)
      d2 = _project_to_boundary(flat0, w, f + tf.reduce_sum(w * (flat0 - flat), 1), self.norm)
      a1 = tf.maximum(per_example_norm(d1, self.norm), 1e-8)
      a2 = tf.maximum(per_example_norm(d2, self.norm), 1e-8)
      alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, self.alpha_max)[:, None]
      new = (flat + self.eta * d1) * (1.0 - alpha) + (flat0 + self.eta * d2) * alpha
      x = tf.reshape(tf.clip_by_value(new, 0.0, 1.0), tf.shape(x0))
      miscl = losses.misclassified(logits_of(model_fn, x), labels)
      dist = per_example_norm(x - x0, self.norm)
      better = tf.logical_and(miscl, dist < best_norm)
      x_adv = tf.where(expand(better, x), x, x_adv)
      best_norm = tf.where(better, dist, best_norm)
      # Backward step towards x0 after a success (beta).
      x = tf.where(expand(miscl, x), x0 + (x - x0) * self.beta, x)
    fooled = best_norm <= self.eps
    return tf.where(expand(fooled, x0), x_adv, x0), fooled, -best_norm

  def num_runs(self, num_classes):
    return min(self.num_target_classes, num_classes - 1) * self.num_restarts

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    self.check_loss_fn(loss_fn)
    restarts = self.num_restarts
    clean_logits = logits_of(model_fn, x0)
    num_targets = min(self.num_target_classes, clean_logits.shape[-1] - 1)
    target = target_class(clean_logits, r // restarts, num_targets)
    # The first run of each target starts at x0, the others at random (AutoAttack).
    return self.run_target(model_fn, x0, labels, target, seeds, r % restarts != 0)
