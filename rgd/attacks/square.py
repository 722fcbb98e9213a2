"""Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"; AutoAttack's `square.py`): random search that only
queries the logits, so it is the gradient-masking check of AutoAttack.

Linf (Alg. 1 and Sec. 3.1): start from vertical stripes of +-eps; each query sets a random
square window of side s to +-eps per channel around the current best point and keeps it if the
margin loss improves. L2 (Sec. 3.2): start from a grid of "eta" patterns (concentric
rectangles of weights 1/(k+1)^2 with opposite signs in the two halves); each query moves mass
from a second random window into a new pattern in the first window, keeping the L2 norm eps.

The window area follows the published schedule: p = p_init halved after iterations
10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (of 10000; with `rescale_schedule` the
iterations are scaled to the query budget, AutoAttack-standard does not rescale).

    attack = Square("linf", 8 / 255, num_queries=5000)
    x_adv = attack(model_fn, x, labels, seed)

Unlike AutoAttack (one window position per batch) each example draws its own window.
"""
import numpy as np
import tensorflow as tf

from rgd.attacks import losses, projections
from rgd.attacks.apgd import check_norm, expand, logits_of, per_example_norm, run_until_fooled

P_INIT = 0.8   # AutoAttack-standard's p_init
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)   # of 10000 iterations


def p_selection(iteration, p_init=P_INIT, num_queries=10000, rescale=False):
  """Fraction of the image covered by the window at `iteration` (a tensor or an int)."""
  it = tf.cast(iteration, tf.float32)
  if rescale:
    it = tf.floor(it / num_queries * 10000.0)
  halvings = tf.add_n([tf.cast(it > b, tf.float32) for b in P_HALVINGS])
  return p_init / tf.pow(2.0, halvings)


def _random_signs(shape, seed):
  return tf.where(tf.random.stateless_uniform(shape, seed) < 0.5, -1.0, 1.0)


def _random_offsets(batch, limit, seed):
  """Uniform integers in [0, limit] (limit a scalar tensor), one per example."""
  u = tf.random.stateless_uniform([batch], seed)
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(limit + 1, tf.float32)), tf.int32), limit)


def _window(h, w, top, left, size):
  """[B, h, w, 1] float mask of the square window of side `size` at (top, left)."""
  rows = tf.range(h)[None, :, None] - top[:, None, None]
  cols = tf.range(w)[None, None, :] - left[:, None, None]
  inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
  return tf.cast(inside, tf.float32)[..., None]


def l2_update(delta, mask1, mask2, pattern, eps):
  """One L2 proposal of AutoAttack's `square.py` (`attack_single_run`, L2 branch), given its
  random draws: `mask1`/`mask2` the two windows [B, h, w, 1], `pattern` the signed eta pattern
  inside window 1 [B, h, w, C]. Returns the new direction, of unit L2 norm per example.

  The bookkeeping follows fra31/auto-attack line by line: the old content of window 1 is
  normalised per channel (`norms_window_1`, [B,1,1,C]) and added to the pattern; the result is
  normalised per channel and scaled so that each channel gets 1/C of the budget left in the
  image plus the energy of both windows. `norms_image` and `norms_windows` are `lp_norm`s over
  all channels together ([B,1,1,1] in AutoAttack: `(x ** 2).view(B, -1).sum(-1).sqrt()`), not
  per channel as in the original square-attack repository (`axis=(2, 3)`); rgd follows AutoAttack.
  Window 2 is then emptied, window 1 filled, and the whole direction normalised.
  """
  spatial = lambda t: tf.sqrt(tf.reduce_sum(tf.square(t), axis=[1, 2], keepdims=True))
  norm_window1 = spatial(delta * mask1)                                 # [B, 1, 1, C]
  norm_image = expand(per_example_norm(delta, "l2"), delta)             # [B, 1, 1, 1]
  norm_windows = expand(per_example_norm(delta * tf.maximum(mask1, mask2), "l2"), delta)
  c = delta.shape[-1]
  new = pattern + delta * mask1 / (1e-12 + norm_window1)
  budget = tf.maximum(eps**2 - tf.square(norm_image), 0.0) / c + tf.square(norm_windows)
  new = new / (1e-12 + spatial(new)) * tf.sqrt(budget)
  delta = tf.where(mask1 > 0, new, tf.where(mask2 > 0, 0.0, delta))
  return delta / (expand(per_example_norm(delta, "l2"), delta) + 1e-12)


def _eta_numpy(size):
  """AutoAttack's `eta(size)` (without the random transpose) as a numpy [size, size] array."""
  def rectangles(rows, cols):
    out = np.zeros((rows, cols))
    cu, cv = rows // 2, cols // 2
    for c in range(max(cu + 1, cv + 1)):
      out[max(cu - c, 0):min(cu + c + 1, rows), max(cv - c, 0):min(cv + c + 1, cols)] += (
          1.0 / (c + 1)**2)
    return out / max(np.sqrt((out**2).sum()), 1e-12)
  eta = np.zeros((size, size))
  eta[:size // 2] = rectangles(size // 2, size)
  eta[size // 2:] = -rectangles(size - size // 2, size)
  return eta / np.sqrt((eta**2).sum())


def _eta_pattern(h, w, top, left, size, transpose):
  """AutoAttack's `eta(size)` placed at (top, left) in an [h, w] canvas: [B, h, w, 1].

  The two halves (rows < size // 2 and the rest) each hold concentric rectangles, cell (u, v)
  weighing sum_{c = k}^{M - 1} 1 / (c + 1)^2 with k its Chebyshev distance to the half's
  centre; each half is normalised, the lower one negated, and the whole normalised.
  """
  max_side = max(h, w) + 2
  harmonic = tf.constant([0.0] + [sum(1.0 / j**2 for j in range(1, n + 1))
                                  for n in range(1, max_side + 1)], tf.float32)
  rows = tf.range(h)[None, :, None] - top[:, None, None]
  cols = tf.range(w)[None, None, :] - left[:, None, None]
  rows, cols = tf.broadcast_to(rows, [tf.shape(top)[0], h, w]), tf.broadcast_to(
      cols, [tf.shape(top)[0], h, w])
  inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
  t = transpose[:, None, None]
  u, v = tf.where(t, cols, rows), tf.where(t, rows, cols)
  half = size // 2
  upper = u < half
  extent = tf.where(upper, half, size - half)
  r = tf.where(upper, u, u - half)
  num_rings = tf.maximum(extent // 2 + 1, size // 2 + 1)
  ring = tf.maximum(tf.abs(r - extent // 2), tf.abs(v - size // 2))
  val = (tf.gather(harmonic, tf.clip_by_value(num_rings, 0, max_side)) -
         tf.gather(harmonic, tf.clip_by_value(ring, 0, max_side)))
  val = tf.where(inside, val, 0.0)
  parts = []
  for part in (tf.logical_and(inside, upper), tf.logical_and(inside, tf.logical_not(upper))):
    pv = tf.where(part, val, 0.0)
    norm = tf.sqrt(tf.reduce_sum(tf.square(pv), axis=[1, 2], keepdims=True))
    parts.append((pv / tf.maximum(norm, 1e-12), tf.cast(norm > 0, tf.float32)))
  pattern = parts[0][0] - parts[1][0]
  count = parts[0][1] + parts[1][1]
  return (pattern / tf.sqrt(tf.maximum(count, 1.0)))[..., None]


class Square:

  def __init__(self, norm, eps, num_queries=5000, num_restarts=1, p_init=P_INIT,
               rescale_schedule=False):
    check_norm(norm, eps)
    self.name = "square"
    self.norm, self.eps = norm, float(eps)
    self.num_queries, self.num_restarts = int(num_queries), int(num_restarts)
    self.p_init, self.rescale_schedule = float(p_init), bool(rescale_schedule)
    self.project = projections.project_fn(norm, self.eps)

  def _side(self, i, h, w, minimum):
    p = p_selection(i, self.p_init, self.num_queries, self.rescale_schedule)
    side = tf.maximum(tf.cast(tf.round(tf.sqrt(p * float(h * w))), tf.int32), minimum)
    if self.norm == "l2":
      side += 1 - side % 2          # AutoAttack's L2 windows have odd sides
    return tf.minimum(side, min(h, w))

  def _l2_start(self, x0, seed):
    """A grid of eta patterns of side h // 5 (AutoAttack: 5 x 5 tiles on CIFAR), each with a
    random orientation and a random sign per channel, scaled to norm eps."""
    batch = tf.shape(x0)[0]
    h, w, c = x0.shape[1], x0.shape[2], x0.shape[3]
    tile = max(h // 5, 1)
    n_h, n_w = h // tile, w // tile
    start_h, start_w = (h - tile * n_h) // 2, (w - tile * n_w) // 2
    eta = _eta_numpy(tile)
    rows, cols = np.arange(h) - start_h, np.arange(w) - start_w
    covered = ((rows >= 0) & (rows < tile * n_h))[:, None] & (
        (cols >= 0) & (cols < tile * n_w))[None, :]
    r, q = np.clip(rows, 0, tile * n_h - 1), np.clip(cols, 0, tile * n_w - 1)
    plain = np.where(covered, eta[r[:, None] % tile, q[None, :] % tile], 0.0)
    flipped = np.where(covered, eta.T[r[:, None] % tile, q[None, :] % tile], 0.0)
    tile_index = (r[:, None] // tile) * n_w + q[None, :] // tile          # [h, w]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    transpose = tf.random.stateless_uniform([batch, n_h * n_w], seeds[0]) < 0.5
    signs = _random_signs([batch, n_h * n_w, c], seeds[1])
    transpose = tf.gather(transpose, tile_index.reshape(-1), axis=1)
    signs = tf.gather(signs, tile_index.reshape(-1), axis=1)
    pattern = tf.where(transpose, flipped.reshape(-1).astype(np.float32),
                       plain.reshape(-1).astype(np.float32))
    delta = tf.reshape(pattern[..., None] * signs, tf.shape(x0))
    delta /= expand(per_example_norm(delta, "l2"), delta) + 1e-12
    return self.project(x0 + self.eps * delta, x0)

  def _linf_proposal(self, x_best, x0, i, seed):
    batch = tf.shape(x0)[0]
    h, w, c = x0.shape[1], x0.shape[2], x0.shape[3]
    side = self._side(i, h, w, 1)
    s = tf.random.experimental.stateless_split(seed, 3)
    mask = _window(h, w, _random_offsets(batch, h - side, s[0]),
                   _random_offsets(batch, w - side, s[1]), side)
    step = 2.0 * self.eps * _random_signs([batch, 1, 1, c], s[2])
    return self.project(x_best + mask * step, x0)

  def _l2_proposal(self, x_best, x0, i, seed):
    batch = tf.shape(x0)[0]
    h, w, c = x0.shape[1], x0.shape[2], x0.shape[3]
    side = self._side(i, h, w, 3)
    s = tf.random.experimental.stateless_split(seed, 6)
    top, left = _random_offsets(batch, h - side, s[0]), _random_offsets(batch, w - side, s[1])
    top2, left2 = _random_offsets(batch, h - side, s[2]), _random_offsets(batch, w - side, s[3])
    mask1, mask2 = _window(h, w, top, left, side), _window(h, w, top2, left2, side)
    transpose = tf.random.stateless_uniform([batch], s[4]) < 0.5
    pattern = (_eta_pattern(h, w, top, left, side, transpose) *
               _random_signs([batch, 1, 1, c], s[5]))
    delta = l2_update(x_best - x0, mask1, mask2, pattern, self.eps)
    return self.project(x0 + self.eps * delta, x0)

  def run(self, model_fn, x0, labels, seed):
    """One run of the random search; returns (x_best, fooled, margin loss)."""
    x0 = tf.cast(x0, tf.float32)
    batch = tf.shape(x0)[0]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if self.norm == "linf":
      stripes = _random_signs([batch, 1, x0.shape[2], x0.shape[3]], seeds[0])
      x_best = self.project(x0 + self.eps * stripes, x0)
    else:
      x_best = self._l2_start(x0, seeds[0])
    logits = logits_of(model_fn, x_best)
    loss_best = losses.margin_loss(logits, labels)
    fooled = losses.misclassified(logits, labels)
    propose = self._linf_proposal if self.norm == "linf" else self._l2_proposal
    for i in tf.range(self.num_queries):
      if tf.reduce_all(fooled):
        break
      x_new = propose(x_best, x0, i, tf.random.experimental.stateless_fold_in(seeds[1], i))
      logits = logits_of(model_fn, x_new)
      loss = losses.margin_loss(logits, labels)
      miscl = losses.misclassified(logits, labels)
      take = tf.logical_and(tf.logical_not(fooled), tf.logical_or(loss > loss_best, miscl))
      x_best = tf.where(expand(take, x0), x_new, x_best)
      loss_best = tf.where(take, loss, loss_best)
      fooled = tf.logical_or(fooled, tf.logical_and(take, miscl))
    return x_best, fooled, loss_best

  def __call__(self, model_fn, x, labels, seed=(0, 0)):
    def run(r, seed, x0, labels):
      del r
      return self.run(model_fn, x0, labels, seed)
    x_adv, _ = run_until_fooled(run, model_fn, x, labels, seed, self.num_restarts)
    return x_adv
