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
