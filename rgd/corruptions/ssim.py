"""SSIM (Wang et al. 2004) as `tf.image.ssim` computes it, and the SSIM guard of seed 003.

`ssim(x, y)` follows tf.image.ssim (image_ops_impl `_ssim_helper`/`_ssim_per_channel`): an
11x11 Gaussian window with sigma 1.5, VALID filtering, k1 = 0.01, k2 = 0.03, max_val 1, the
mean of the SSIM map over pixels and channels. It is written out here so that the guard can
evaluate a batch of 9 interpolations at once and so that the formula sits next to the guard.

`ssim_guard(x, x_hat, threshold=0.3)` is seed 003 App. G: for an AdA output with
SSIM(x, x_hat) < t, take 9 equally spaced gamma in [0, 1], fit a quadratic in gamma to
SSIM(x, (1 - gamma) x + gamma x_hat) - t, and move to its root in [0, 1] closest to 1 ("the most
corrupted variant of x along the ray ... which obeys the SSIM threshold"). No iteration, so it
is cheap on accelerators; approximate because the quadratic can underfit.
"""
import numpy as np
import tensorflow as tf

SSIM_THRESHOLD = 0.3  # seed 003 Sec. 2 "Meaningful corruptions"
NUM_GAMMAS = 9  # seed 003 App. G


def _gaussian_window(size, sigma):
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2.0 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def ssim(x, y, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
  """Per-image SSIM [B] of float images [B, H, W, C]."""
  x = tf.convert_to_tensor(x, tf.float32)
  y = tf.convert_to_tensor(y, tf.float32)
  channels = x.shape[-1]
  window = tf.constant(_gaussian_window(filter_size, filter_sigma))[:, :, None, None]
  window = tf.tile(window, [1, 1, channels, 1])
  reduce = lambda t: tf.nn.depthwise_conv2d(t, window, [1, 1, 1, 1], "VALID")
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  mu_x, mu_y = reduce(x), reduce(y)
  num0 = 2.0 * mu_x * mu_y
  den0 = tf.square(mu_x) + tf.square(mu_y)
  luminance = (num0 + c1) / (den0 + c1)
  num1 = 2.0 * reduce(x * y)
  den1 = reduce(tf.square(x) + tf.square(y))
  cs = (num1 - num0 + c2) / (den1 - den0 + c2)
  return tf.reduce_mean(luminance * cs, axis=[1, 2, 3])


def _quadratic_fit_matrix():
  """Least-squares coefficients (a, b, c) of a g^2 + b g + c from values at the 9 gammas."""
  gammas = np.linspace(0.0, 1.0, NUM_GAMMAS)
  vander = np.stack([gammas ** 2, gammas, np.ones_like(gammas)], axis=1)
  return gammas.astype(np.float32), np.linalg.pinv(vander).astype(np.float32)  # [9], [3, 9]


def guard_gamma(x, x_hat, threshold=SSIM_THRESHOLD):
  """gamma* [B] of App. G (1 where SSIM(x, x_hat) >= threshold already)."""
  gammas, fit = _quadratic_fit_matrix()
  b = tf.shape(x)[0]
  g = tf.constant(gammas)[:, None, None, None, None]
  ray = (1.0 - g) * x[None] + g * x_hat[None]  # [9, B, H, W, C]
  flat = lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(x)[1:]], 0))
  scores = tf.reshape(ssim(flat(tf.broadcast_to(x[None], tf.shape(ray))), flat(ray)),
                      [NUM_GAMMAS, b]) - threshold  # SSIM(x, x_gamma) - t
  qa, qb, qc = tf.unstack(tf.matmul(tf.constant(fit), scores))  # each [B]
  disc = qb * qb - 4.0 * qa * qc
  sqrt_disc = tf.sqrt(tf.maximum(disc, 0.0))
  safe_a = tf.where(tf.abs(qa) > 1e-12, qa, 1e-12)
  quad_roots = tf.stack([(-qb - sqrt_disc) / (2 * safe_a), (-qb + sqrt_disc) / (2 * safe_a)])
  lin_root = -qc / tf.where(tf.abs(qb) > 1e-12, qb, 1e-12)
  is_quad = tf.abs(qa) > 1e-12
  roots = tf.where(is_quad, quad_roots, tf.stack([lin_root, lin_root]))
  real = tf.logical_or(tf.logical_not(is_quad), disc >= 0.0)
  # App. G clips the roots to [0, 1] and takes the one closest to 1. Taken literally, a second
  # root beyond 1 (the parabola turning up again) would clip to gamma = 1, the unguarded image:
  # rgd keeps the roots inside [0, 1] (up to rounding) and clips only those.
  inside = tf.logical_and(roots >= -1e-3, roots <= 1.0 + 1e-3)
  fitted = tf.reduce_max(tf.where(inside, tf.clip_by_value(roots, 0.0, 1.0), -1.0), axis=0)
  real = tf.logical_and(real, fitted >= 0.0)
  # Without such a root (the quadratic underfits), the largest grid gamma that obeys the
  # threshold; gamma = 0 (the clean image) always does.
  ok = tf.cast(scores >= 0.0, tf.float32) * tf.constant(gammas)[:, None]
  fallback = tf.reduce_max(ok, axis=0)
  gamma = tf.where(real, fitted, fallback)
  return tf.where(scores[-1] >= 0.0, tf.ones_like(gamma), gamma)


def ssim_guard(x, x_hat, threshold=SSIM_THRESHOLD):
  """x_hat, with the examples whose SSIM to x is below `threshold` moved back along the ray to
  x (seed 003 App. G)."""
  gamma = guard_gamma(x, x_hat, threshold)[:, None, None, None]
  return (1.0 - gamma) * x + gamma * x_hat
