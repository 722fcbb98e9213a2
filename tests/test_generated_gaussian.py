"""rgd.datagen.gaussian: the fit recovers known means/covariances; samples are clipped and
labelled by class."""
import os

import numpy as np
import pytest

from rgd.errors import DataError
from rgd.datagen import gaussian, sources

SHAPE = (2, 2, 3)  # D = 12 pixels: small enough for exact covariance checks.
D = 12


def _synthetic(n_per_class, seed=0):
  """Two classes with known means and (different, correlated) covariances, well inside [0, 1]
  so that clipping and quantisation barely change them."""
  rng = np.random.default_rng(seed)
  means = np.stack([np.full(D, 0.35), np.linspace(0.45, 0.65, D)])
  a = rng.normal(size=(D, D)) * 0.02
  covs = np.stack([a @ a.T + 0.001 * np.eye(D), 0.002 * np.eye(D) + 0.001])
  x = np.concatenate([rng.multivariate_normal(means[k], covs[k], n_per_class) for k in (0, 1)])
  images = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).reshape((-1,) + SHAPE)
  labels = np.repeat([0, 1], n_per_class)
  return images, labels, means, covs


def test_fit_is_the_sample_mean_and_covariance_and_recovers_the_truth():
  images, labels, means, covs = _synthetic(6000)
  model = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  assert model.image_shape == SHAPE and model.num_classes == 2
  for k in (0, 1):
    x = images[labels == k].reshape(-1, D) / 255.0
    np.testing.assert_allclose(model.means[k], x.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.covariance(k), np.cov(x, rowvar=False), rtol=0, atol=1e-8)
    # Against the generating distribution: standard errors are ~sigma / sqrt(6000).
    np.testing.assert_allclose(model.means[k], means[k], atol=3e-3)
    np.testing.assert_allclose(model.covariance(k), covs[k], atol=3e-4)


def test_few_images_use_the_exact_data_factor():
  images, labels, _, _ = _synthetic(5)  # n - 1 = 4 < D: rank-deficient covariance.
  model = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  assert model.factors[0].shape == (D, 5)
  x = images[:5].reshape(-1, D) / 255.0
  np.testing.assert_allclose(model.covariance(0), np.cov(x, rowvar=False), atol=1e-8)
  with pytest.raises(DataError, match="class 1 has 1 training image"):
    gaussian.ClassConditionalGaussian.fit(images[:6], labels[:6], 2)


def test_samples_follow_the_fit_and_are_clipped():
  images, labels, _, _ = _synthetic(3000)
  model = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  flat = model.sample_flat(np.ones(40000, np.int64), np.random.default_rng(1))
  np.testing.assert_allclose(flat.mean(axis=0), model.means[1], atol=2e-3)
  np.testing.assert_allclose(np.cov(flat, rowvar=False), model.covariance(1), atol=1e-4)

  # A wide class (mean 0.6, std 0.5): about 21% of the values exceed 1 and 12% fall below 0
  # before clipping; images are exactly clip + round of the same draws.
  wide = gaussian.ClassConditionalGaussian(np.full((1, D), 0.6), [np.eye(D) * 0.5], SHAPE)
  flat = wide.sample_flat(np.zeros(500, np.int64), np.random.default_rng(2))
  assert (flat > 1).mean() > 0.15 and (flat < 0).mean() > 0.08
  img = wide.sample(np.zeros(500, np.int64), np.random.default_rng(2))
  assert img.dtype == np.uint8 and img.shape == (500,) + SHAPE
  np.testing.assert_array_equal(
      img.reshape(500, D), np.round(np.clip(flat, 0, 1) * 255).astype(np.uint8))


def test_batches_are_class_balanced_labelled_and_reproducible():
  images, labels, _, _ = _synthetic(500)
  model = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  out = list(model.batches(num_per_class=301, batch_size=100, seed=3))
  assert [s for s, _, _ in out] == list(range(0, 602, 100))
  x = np.concatenate([b for _, b, _ in out]).reshape(-1, D) / 255.0
  y = np.concatenate([l for _, _, l in out])
  np.testing.assert_array_equal(y, np.arange(602) % 2)
  # Each sample follows its class: the class means differ by >= 0.1 per pixel, the standard
  # error of a mean of 301 samples is <= 0.0045.
  for k in (0, 1):
    np.testing.assert_allclose(x[y == k].mean(axis=0), model.means[k], atol=0.02)
  again = list(model.batches(num_per_class=301, batch_size=100, seed=3))
  np.testing.assert_array_equal(again[4][1], out[4][1])
  other = list(model.batches(num_per_class=301, batch_size=100, seed=4))
  assert not np.array_equal(other[0][1], out[0][1])


def test_write_samples_is_a_readable_source_and_skips_when_done(tmp_path):
  images, labels, _, _ = _synthetic(50)
  model = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  folder = gaussian.write_samples(model, 7, str(tmp_path / "g"), batch_size=4, seed=5)
  src = sources.open_source(folder)
  expected = np.concatenate([b for _, b, _ in model.batches(7, 4, 5)])
  np.testing.assert_array_equal(src.read(0, 14), expected)
  np.testing.assert_array_equal(src.labels, np.arange(14) % 2)
  mtime = os.stat(os.path.join(folder, "image.npy")).st_mtime_ns
  gaussian.write_samples(model, 7, folder, batch_size=4, seed=5)
  assert os.stat(os.path.join(folder, "image.npy")).st_mtime_ns == mtime
  assert sorted(os.listdir(folder)) == ["image.npy", "label.npy"]
