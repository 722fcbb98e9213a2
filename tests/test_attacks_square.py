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


# ------------------------------------------------------------------------------------------
# L2 proposals against a numpy transcription of AutoAttack's update (fra31/auto-attack
# autoattack/square.py, SquareAttack.attack_single_run, L2 branch; eta_rectangles, eta),
# one example at a time in AutoAttack's [c, h, w] layout, fed the same draws as rgd.


def _aa_eta_rectangles(x, y):
  delta = np.zeros([x, y])
  x_c, y_c = x // 2 + 1, y // 2 + 1
  counter2 = [x_c - 1, y_c - 1]
  for counter in range(0, max(x_c, y_c)):
    delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
          max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += 1.0 / (counter + 1)**2
    counter2[0] -= 1
    counter2[1] -= 1
  return delta / np.sqrt((delta**2).sum())


def _aa_eta(s, transpose):
  delta = np.zeros([s, s])
  delta[:s // 2] = _aa_eta_rectangles(s // 2, s)
  delta[s // 2:] = -1. * _aa_eta_rectangles(s - s // 2, s)
  delta /= np.sqrt((delta**2).sum())
  return delta.T if transpose else delta


def _aa_l2_update(x_curr, x_best_curr, eps, s, vh, vw, vh2, vw2, eta, sign):
  """The lines of attack_single_run from `delta_curr = ...` to `x_new = ...` for one example
  ([1, c, h, w]); returns (delta_curr before normalisation, x_new, norms_windows)."""
  c = x_curr.shape[1]
  delta_curr = x_best_curr - x_curr
  new_deltas_mask = np.zeros_like(x_curr)
  new_deltas_mask[:, :, vh:vh + s, vw:vw + s] = 1.0
  norms_window_1 = np.sqrt((delta_curr[:, :, vh:vh + s, vw:vw + s]**2).sum(
      axis=(-2, -1), keepdims=True))
  new_deltas_mask_2 = np.zeros_like(x_curr)
  new_deltas_mask_2[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.
  norms_image = np.sqrt(((x_best_curr - x_curr)**2).reshape(1, -1).sum(-1)).reshape(1, 1, 1, 1)
  mask_image = np.maximum(new_deltas_mask, new_deltas_mask_2)
  norms_windows = np.sqrt(((delta_curr * mask_image)**2).sum(axis=(-2, -1), keepdims=True))
  new_deltas = np.ones([1, c, s, s])
  new_deltas *= eta.reshape(1, 1, s, s) * sign.reshape(1, c, 1, 1)
  old_deltas = delta_curr[:, :, vh:vh + s, vw:vw + s] / (1e-12 + norms_window_1)
  new_deltas += old_deltas
  new_deltas = new_deltas / (1e-12 + np.sqrt((new_deltas**2).sum(axis=(-2, -1), keepdims=True))
                             ) * np.sqrt(np.maximum(eps**2 - norms_image**2, 0.) / c +
                                         norms_windows**2)
  delta_curr[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.
  delta_curr[:, :, vh:vh + s, vw:vw + s] = new_deltas + 0
  t = np.sqrt((delta_curr**2).reshape(1, -1).sum(-1)).reshape(1, 1, 1, 1)
  x_new = np.clip(x_curr + delta_curr / (t + 1e-12) * eps, 0., 1.)
  return delta_curr, x_new, norms_windows


def test_l2_proposal_matches_autoattack_per_channel_budget():
  batch, h, w, c, eps = 6, 12, 12, 3, 0.5
  rng = np.random.RandomState(0)
  x0 = rng.uniform(0.2, 0.8, (batch, h, w, c)).astype(np.float32)
  # A perturbation of norm 0.8 eps, unevenly spread over the channels, so that the per-channel
  # budget and the all-channel one differ.
  delta = rng.normal(size=(batch, h, w, c)) * np.array([1.0, 0.3, 2.0])
  delta *= 0.8 * eps / np.sqrt((delta**2).reshape(batch, -1).sum(1))[:, None, None, None]
  x_best = (x0 + delta).astype(np.float32)
  delta = x_best - x0
  attack = square.Square("l2", eps, num_queries=100)
  seeds = tf.constant(rng.randint(0, 2**31 - 1, (batch, 2)), tf.int32)
  checked_overlap = False
  for i in (0, 30, 90):           # sides 11, 7, 5 (p = 0.8, 0.4, 0.2 of 144 pixels)
    draws = attack.l2_draws(seeds, tf.constant(i), h, w, c)
    got = attack.l2_window_update(tf.constant(delta), draws).numpy()
    x_new = attack._l2_proposal(tf.constant(x_best), tf.constant(x0), tf.constant(i),
                                seeds).numpy()
    d = {k: v.numpy() for k, v in draws.items()}
    s = int(d["side"])
    assert s == max(int(round(np.sqrt(float(square.p_selection(i)) * h * w))), 3) | 1
    for b in range(batch):
      chw = lambda a: np.transpose(a[b:b + 1], (0, 3, 1, 2)).astype(np.float64)
      want, want_x, norms_windows = _aa_l2_update(
          chw(x0), chw(x_best), eps, s, d["top"][b], d["left"][b], d["top2"][b],
          d["left2"][b], _aa_eta(s, d["transpose"][b]), d["signs"][b].reshape(c))
      np.testing.assert_allclose(chw(got), want, atol=2e-6)
      np.testing.assert_allclose(chw(x_new), want_x, atol=2e-6)
      # The bookkeeping: channel k of window 1 holds the slack / c plus what channel k had in
      # the two windows, not a share of all channels' window energy.
      top, left = d["top"][b], d["left"][b]
      energy = (got[b, top:top + s, left:left + s] ** 2).sum(axis=(0, 1))
      slack = eps**2 - (delta[b]**2).sum()
      np.testing.assert_allclose(energy, slack / c + norms_windows.reshape(c)**2, rtol=1e-4)
      all_channels = slack / c + (norms_windows**2).sum()
      assert np.all(np.abs(energy - all_channels) > 1e-3 * all_channels)
      checked_overlap |= (abs(int(d["top2"][b]) - top) < s and abs(int(d["left2"][b]) - left) < s)
  assert checked_overlap   # some draw had overlapping windows
  # Every proposal lies in the ball and the box.
  dist = np.sqrt(((x_new - x0)**2).reshape(batch, -1).sum(1))
  assert np.all(dist <= eps * (1 + 1e-5)) and x_new.min() >= 0 and x_new.max() <= 1


def test_l2_square_stays_in_ball_and_box():
  keras = tf.keras
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
  x = np.random.RandomState(1).uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
  labels = model(x).numpy().argmax(1).astype(np.int32)
  eps = 0.5
  x_adv = square.Square("l2", eps, num_queries=20)(lambda t: model(t), x, labels,
                                                    tf.constant([1, 2])).numpy()
  dist = np.sqrt(((x_adv - x)**2).reshape(len(x), -1).sum(1))
  assert np.all(dist <= eps * (1 + 1e-5)) and x_adv.min() >= 0 and x_adv.max() <= 1
  assert np.all(dist > 0.5 * eps)   # it moved: every proposal has norm eps (up to clipping)


def _autoattack_l2_update(delta, vh, vw, vh2, vw2, s, eta, signs, eps):
  """fra31/auto-attack `square.py` (its master branch; PyPI pyautoattack 0.2.0), L2 branch of
  `attack_single_run`, transcribed to numpy, NCHW, one window position per batch as in the
  reference. (Its first packaged version took `norms_windows` with `lp_norm`, over all
  channels; its change of 2021-03 made it per channel.)"""
  b, c = delta.shape[:2]
  lp_norm = lambda x: np.sqrt((x ** 2).reshape(b, -1).sum(-1)).reshape(b, 1, 1, 1)
  mask, mask_2 = np.zeros_like(delta), np.zeros_like(delta)
  mask[:, :, vh:vh + s, vw:vw + s] = 1.0
  mask_2[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
  norms_window_1 = np.sqrt((delta[:, :, vh:vh + s, vw:vw + s] ** 2).sum(axis=(-2, -1),
                                                                      keepdims=True))
  norms_image = lp_norm(delta)
  norms_windows = np.sqrt(((delta * np.maximum(mask, mask_2)) ** 2).sum(axis=(-2, -1),
                                                                       keepdims=True))
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
  # the whole (each channel: an equal share of the slack plus its own energy in the windows).
  energy = lambda d: (d[:, :, vh:vh + s, vw:vw + s] ** 2).sum(axis=(2, 3))
  np.testing.assert_allclose(energy(got), energy(expected), rtol=1e-4)
  np.testing.assert_allclose(np.sqrt((got ** 2).reshape(b, -1).sum(-1)), 1.0, rtol=1e-5)
