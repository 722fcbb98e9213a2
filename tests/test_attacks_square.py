"""Square's window patterns and its published p schedule."""
import numpy as np
import tensorflow as tf

from rgd.attacks import square


def test_p_schedule_halves_at_the_published_iterations():
  its = [0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001, 4000, 4001, 6001, 8001]
  got = [float(square.p_selection(i, 0.8)) for i in its]
  halvings = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9]
  np.testing.assert_allclose(got, [0.8 / 2**h for h in halvings], rtol=1e-6)
  # Rescaled to a 1000-query budget, iteration 100 counts as 1000.
  assert float(square.p_selection(100, 0.8, 1000, rescale=True)) == np.float32(0.8 / 16)


def test_eta_by_hand_for_side_3():
  # Upper half (1 x 3, centre (0, 1)): ring 0 adds 1 at the centre, ring 1 adds 1/4 to all:
  # [1/4, 5/4, 1/4]. Lower half (2 x 3, centre (1, 1)): rows [1/4, 1/4, 1/4] and
  # [1/4, 5/4, 1/4]. Each half normalised, the lower negated, the whole divided by sqrt 2.
  up = np.array([[0.25, 1.25, 0.25]])
  low = np.array([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]])
  expected = np.concatenate([up / np.linalg.norm(up), -low / np.linalg.norm(low)]) / np.sqrt(2)
  np.testing.assert_allclose(square._eta_numpy(3), expected, rtol=1e-12)


def test_eta_pattern_in_a_window_matches_numpy():
  top, left = tf.constant([1, 4, 0]), tf.constant([2, 0, 3])
  transpose = tf.constant([False, True, False])
  for size in (3, 4, 5):
    got = square._eta_pattern(9, 8, top, left, tf.constant(size), transpose).numpy()[..., 0]
    for b in range(3):
      eta = square._eta_numpy(size)
      eta = eta.T if bool(transpose[b]) else eta
      want = np.zeros((9, 8))
      t, l = int(top[b]), int(left[b])
      want[t:t + size, l:l + size] = eta[:9 - t, :8 - l]
      if t + size <= 9 and l + size <= 8:
        np.testing.assert_allclose(got[b], want, atol=1e-6)


def _autoattack_l2_update(delta, vh, vw, vh2, vw2, s, eta, signs, eps):
  """fra31/auto-attack `square.py` (commit 1706c9b), L2 branch of `attack_single_run`,
  transcribed to numpy, NCHW, one window position per batch as in the reference."""
  b, c = delta.shape[:2]
  lp_norm = lambda x: np.sqrt((x ** 2).reshape(b, -1).sum(-1)).reshape(b, 1, 1, 1)
  mask, mask_2 = np.zeros_like(delta), np.zeros_like(delta)
  mask[:, :, vh:vh + s, vw:vw + s] = 1.0
  mask_2[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
  norms_window_1 = np.sqrt((delta[:, :, vh:vh + s, vw:vw + s] ** 2).sum(axis=(-2, -1),
                                                                      keepdims=True))
  norms_image = lp_norm(delta)
  norms_windows = lp_norm(delta * np.maximum(mask, mask_2))
  new_deltas = np.ones([b, c, s, s]) * eta.reshape(1, 1, s, s) * signs
  new_deltas += delta[:, :, vh:vh + s, vw:vw + s] / (1e-12 + norms_window_1)
  new_deltas = new_deltas / (1e-12 + np.sqrt((new_deltas ** 2).sum(axis=(-2, -1),
                                                                    keepdims=True))) * np.sqrt(
      np.maximum(eps ** 2 - norms_image ** 2, 0) / c + norms_windows ** 2)
  delta = delta.copy()
  delta[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.0
  delta[:, :, vh:vh + s, vw:vw + s] = new_deltas
  return delta / (lp_norm(delta) + 1e-12)


def test_l2_update_matches_autoattacks_bookkeeping():
  """Same windows, eta pattern and signs fed to rgd's l2_update and to the numpy transcription
  of AutoAttack's update: the per-channel energies and the whole direction agree."""
  rng = np.random.RandomState(0)
  b, c, h, w, s, eps = 3, 3, 12, 12, 5, 0.5
  delta = rng.normal(0, 0.05, (b, c, h, w))
  vh, vw, vh2, vw2 = 2, 6, 5, 1                        # overlapping windows, as can happen
  eta = square._eta_numpy(s)
  signs = rng.choice([-1.0, 1.0], size=(b, c, 1, 1))
  expected = _autoattack_l2_update(delta, vh, vw, vh2, vw2, s, eta, signs, eps)

  to_nhwc = lambda a: tf.constant(np.transpose(a, (0, 2, 3, 1)), tf.float32)
  window = lambda top, left: square._window(h, w, tf.fill([b], top), tf.fill([b], left), s)
  pattern = np.zeros((b, c, h, w))
  pattern[:, :, vh:vh + s, vw:vw + s] = eta.reshape(1, 1, s, s) * signs
  got = square.l2_update(to_nhwc(delta), window(vh, vw), window(vh2, vw2), to_nhwc(pattern),
                         eps).numpy()
  got = np.transpose(got, (0, 3, 1, 2))
  np.testing.assert_allclose(got, expected, atol=2e-6)
  # The bookkeeping that matters: the energy each channel of window 1 receives, relative to
  # the whole (AutoAttack gives every channel the same share of the budget).
  energy = lambda d: (d[:, :, vh:vh + s, vw:vw + s] ** 2).sum(axis=(2, 3))
  np.testing.assert_allclose(energy(got), energy(expected), rtol=1e-4)
  np.testing.assert_allclose(np.sqrt((got ** 2).reshape(b, -1).sum(-1)), 1.0, rtol=1e-5)
