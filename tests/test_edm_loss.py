"""The EDM loss is reduced as NVlabs/edm's training loop reduces it: EDMLoss's per-pixel loss
lambda(sigma) (D - y)^2, summed over everything and scaled by loss_scaling / batch
(training_loop.py: `loss.sum().mul(loss_scaling / batch_gpu_total)`), on hand-computed cases."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.edm import denoiser


def _sigmas(seed, batch):
  # edm_loss splits its seed into (sigma seed, noise seed) and draws sigma for the batch.
  seeds = tf.random.experimental.stateless_split(tf.constant(seed), 2)
  return denoiser.sample_sigma(seeds[0], batch).numpy(), seeds[1]


def test_per_example_loss_is_summed_over_pixels():
  # D = 0: the loss of example i is lambda(sigma_i) * sum of y^2 over its pixels, whatever the
  # noise. y: [2, 1, 2, 1] with pixels (0.5, -1) and (0.25, 0.75).
  images = tf.constant([[[[0.5], [-1.0]]], [[[0.25], [0.75]]]])
  zero = lambda x, sigma, labels, augment_labels=None, training=False: tf.zeros_like(x)
  got = denoiser.edm_loss(zero, images, None, [3, 4]).numpy()
  sigma, _ = _sigmas([3, 4], 2)
  lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2   # EDM Table 1, sigma_data 0.5
  np.testing.assert_allclose(got, lam * np.array([0.25 + 1.0, 0.0625 + 0.5625]), rtol=1e-6)


def test_identity_denoiser_loss_is_weighted_noise_energy():
  # D(y + n) = y + n: the loss is lambda(sigma) * sum(n^2) with n = sigma * N(0, 1) drawn from
  # the loss's own noise seed.
  images = tf.zeros([3, 2, 2, 1])
  ident = lambda x, sigma, labels, augment_labels=None, training=False: x
  got = denoiser.edm_loss(ident, images, None, [5, 6]).numpy()
  sigma, noise_seed = _sigmas([5, 6], 3)
  noise = tf.random.stateless_normal([3, 2, 2, 1], noise_seed).numpy()
  lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
  np.testing.assert_allclose(got, lam * sigma ** 2 * (noise ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("loss_scaling", [1.0, 4.0])
def test_step_loss_is_sum_times_scaling_over_batch(loss_scaling):
  per_example = tf.constant([3.0, 5.0, 10.0, 2.0])
  # (3 + 5 + 10 + 2) * loss_scaling / 4 -- not a mean over pixels too.
  got = float(denoiser.step_loss(per_example, 4, loss_scaling))
  assert got == pytest.approx(20.0 * loss_scaling / 4)
  # Two replicas of two examples each: their step losses add up to the global one (the
  # optimizer sums the replicas' gradients), as DDP's average of per-GPU sum / batch_gpu_total.
  halves = [float(denoiser.step_loss(per_example[i:i + 2], 4, loss_scaling)) for i in (0, 2)]
  assert sum(halves) == pytest.approx(got)
