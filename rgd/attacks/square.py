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
    x_adv = attack(model_fn, x, labels, seed)          # rgd/attacks/protocol.py

Unlike AutoAttack (one window position per batch) each example draws its own window, from its
own seed (rgd/attacks/common.py), so a point's search does not depend on its batch.

L2 energy bookkeeping (AutoAttack `square.py` `attack_single_run`, L2 branch): the new window
content is rescaled per channel to sqrt(max(eps^2 - ||delta||^2, 0) / c + ||delta_w,c||^2),
where ||delta||^2 is over the whole image and ||delta_w,c|| is channel c of delta over the
union of the two windows (`norms_windows`, shape [B, c, 1, 1] there): each channel's window
takes back only the energy that channel had in the two windows, plus an equal share of the
slack.
"""
import numpy as np
import tensorflow as tf

from rgd.attacks import common, losses, projections, protocol
from rgd.attacks.common import logits_of
from rgd.attacks.projections import expand, per_example_norm

P_INIT = 0.8   # AutoAttack-standard's p_init
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)   # of 10000 iterations


def p_selection(iteration, p_init=P_INIT, num_queries=10000, rescale=False):
  """Fraction of the image covered by the window at `iteration` (a tensor or an int)."""
  it = tf.cast(iteration, tf.float32)
  if rescale:
    it = tf.floor(it / num_queries * 10000.0)
  halvings = tf.add_n([tf.cast(it > b, tf.float32) for b in P_HALVINGS])
  return p_init / tf.pow(2.0, halvings)


def _random_offsets(seeds, limit):
  """Uniform integers in [0, limit] (limit a scalar tensor), one per example."""
  u = common.uniform(seeds, [])
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(limit + 1, tf.float32)), tf.int32), limit)


def _window(h, w, top, left, size):
  """[B, h, w, 1] float mask of the square window of side `size` at (top, left)."""
  rows = tf.range(h)[None, :, None] - top[:, None, None]
  cols = tf.range(w)[None, None, :] - left[:, None, None]
  inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
  return tf.cast(inside, tf.float32)[..., None]


def l2_update(delta, mask1, mask2, pattern, eps, normalize=True):
  """One L2 proposal of AutoAttack's `square.py` (`attack_single_run`, L2 branch), given its
  random draws: `mask1`/`mask2` the two windows [B, h, w, 1], `pattern` the signed eta pattern
  inside window 1 [B, h, w, C]. Returns the new direction, of unit L2 norm per example (with
  `normalize`; otherwise AutoAttack's `delta_curr` before its final `normalize`).

  The bookkeeping follows fra31/auto-attack line by line (its master branch, and PyPI
  pyautoattack 0.2.0, square.py lines 350-375): the old content of window 1 is normalised per
  channel (`norms_window_1`, [B,c,1,1]) and added to the pattern; the result is normalised per
  channel and scaled to sqrt(max(eps^2 - norms_image^2, 0) / c + norms_windows^2), with
  `norms_image` over the whole image ([B,1,1,1], `lp_norm`) and `norms_windows` PER CHANNEL
  over the union of the two windows (`((delta_curr * mask_image) ** 2).sum(dim=(-2, -1),
  keepdim=True).sqrt()`, [B,c,1,1]). AutoAttack's first packaged version (2020-08) took
  `norms_windows` over all channels (`lp_norm`); its change of 2021-03 ("small fix square l2")
  made it per channel. Window 2 is then emptied and window 1 filled.
  """
  spatial = lambda t: tf.sqrt(tf.reduce_sum(tf.square(t), axis=[1, 2], keepdims=True))
  norms_window_1 = spatial(delta * mask1)                                # [B, 1, 1, c]
  norms_image = expand(per_example_norm(delta, "l2"), delta)             # [B, 1, 1, 1]
  norms_windows = spatial(delta * tf.maximum(mask1, mask2))              # [B, 1, 1, c]
  c = delta.shape[-1]
  new = pattern + delta * mask1 / (1e-12 + norms_window_1)
  budget = tf.maximum(eps**2 - tf.square(norms_image), 0.0) / c + tf.square(norms_windows)
  new = new / (1e-12 + spatial(new)) * tf.sqrt(budget)
  delta = tf.where(mask1 > 0, new, tf.where(mask2 > 0, 0.0, delta))
  if normalize:
    delta /= expand(per_example_norm(delta, "l2"), delta) + 1e-12
  return delta


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


class Square(protocol.Attack):
  """The random search, `num_restarts` runs of `num_queries` queries (module docstring)."""

  name = "square"
  black_box = True   # AutoAttack's check for gradient masking (checks.check_black_box)

  def __init__(self, norm, eps, num_queries=5000, num_restarts=1, p_init=P_INIT,
               rescale_schedule=False):
    protocol.check_norm(norm, eps)
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

  def _l2_start(self, x0, seeds):
    """A grid of eta patterns of side h // 5 (AutoAttack: 5 x 5 tiles on CIFAR), each with a
    random orientation and a random sign per channel, scaled to norm eps."""
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
    transpose = common.uniform(common.fold_in(seeds, 0), [n_h * n_w]) < 0.5
    signs = common.signs(common.fold_in(seeds, 1), [n_h * n_w, c])
    transpose = tf.gather(transpose, tile_index.reshape(-1), axis=1)
    signs = tf.gather(signs, tile_index.reshape(-1), axis=1)
    pattern = tf.where(transpose, flipped.reshape(-1).astype(np.float32),
                       plain.reshape(-1).astype(np.float32))
    delta = tf.reshape(pattern[..., None] * signs, tf.shape(x0))
    delta /= expand(per_example_norm(delta, "l2"), delta) + 1e-12
    return self.project(x0 + self.eps * delta, x0)

  def _linf_proposal(self, x_best, x0, i, seeds):
    h, w, c = x0.shape[1], x0.shape[2], x0.shape[3]
    side = self._side(i, h, w, 1)
    mask = _window(h, w, _random_offsets(common.fold_in(seeds, 0), h - side),
                   _random_offsets(common.fold_in(seeds, 1), w - side), side)
    step = 2.0 * self.eps * common.signs(common.fold_in(seeds, 2), [1, 1, c])
    return self.project(x_best + mask * step, x0)

  def l2_draws(self, seeds, i, h, w, c):
    """The random draws of L2 query i: the side of the windows, the offsets of window 1
    (new pattern) and window 2 (emptied), the orientation of eta and a sign per channel."""
    side = self._side(i, h, w, 3)
    d = lambda k: common.fold_in(seeds, k)
    return dict(side=side,
                top=_random_offsets(d(0), h - side), left=_random_offsets(d(1), w - side),
                top2=_random_offsets(d(2), h - side), left2=_random_offsets(d(3), w - side),
                transpose=common.uniform(d(4), []) < 0.5,
                signs=common.signs(d(5), [1, 1, c]))

  def l2_window_update(self, delta, draws):
    """`l2_update` (unnormalised) of the perturbation `delta` [B, h, w, c] for `draws`."""
    h, w = delta.shape[1], delta.shape[2]
    side = draws["side"]
    mask1 = _window(h, w, draws["top"], draws["left"], side)
    mask2 = _window(h, w, draws["top2"], draws["left2"], side)
    pattern = (_eta_pattern(h, w, draws["top"], draws["left"], side, draws["transpose"]) *
               draws["signs"])
    return l2_update(delta, mask1, mask2, pattern, self.eps, normalize=False)

  def _l2_proposal(self, x_best, x0, i, seeds):
    h, w, c = x0.shape[1], x0.shape[2], x0.shape[3]
    delta = self.l2_window_update(x_best - x0, self.l2_draws(seeds, i, h, w, c))
    delta /= expand(per_example_norm(delta, "l2"), delta) + 1e-12
    return self.project(x0 + self.eps * delta, x0)

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    """One run of the random search; returns (x_best, fooled, margin loss). `seeds`: [2] or
    per-example [B, 2]."""
    del r
    self.check_loss_fn(loss_fn)
    seed = seeds
    x0 = tf.cast(x0, tf.float32)
    seeds = common.example_seeds(seed, tf.shape(x0)[0])
    start_seeds, query_seeds = common.fold_in(seeds, 0), common.fold_in(seeds, 1)
    if self.norm == "linf":
      stripes = common.signs(start_seeds, [1, x0.shape[2], x0.shape[3]])
      x_best = self.project(x0 + self.eps * stripes, x0)
    else:
      x_best = self._l2_start(x0, start_seeds)
    logits = logits_of(model_fn, x_best)
    loss_best = losses.margin_loss(logits, labels)
    fooled = losses.misclassified(logits, labels)
    propose = self._linf_proposal if self.norm == "linf" else self._l2_proposal
    for i in tf.range(self.num_queries):
      if tf.reduce_all(fooled):
        break
      x_new = propose(x_best, x0, i, common.fold_in(query_seeds, i))
      logits = logits_of(model_fn, x_new)
      loss = losses.margin_loss(logits, labels)
      miscl = losses.misclassified(logits, labels)
      take = tf.logical_and(tf.logical_not(fooled), tf.logical_or(loss > loss_best, miscl))
      x_best = tf.where(expand(take, x0), x_new, x_best)
      loss_best = tf.where(take, loss, loss_best)
      fooled = tf.logical_or(fooled, tf.logical_and(take, miscl))
    return x_best, fooled, loss_best

  def num_runs(self, num_classes):
    del num_classes
    return self.num_restarts
