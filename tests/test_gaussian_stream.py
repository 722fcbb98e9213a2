"""GENERATED='gaussian' (rgd.datagen.gaussian_stream): the class-conditional Gaussian sampled
inside the input pipeline follows the fit, is fixed by the seed, resumes with the iterator, and
is the records tool's sample sequence."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rgd.data import datasets, tfrecord
from rgd.datagen import gaussian, gaussian_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (2, 2, 3)
D = 12


def _synthetic(n_per_class, seed=0):
  """Two classes well inside [0, 1] (so that clipping never acts), with known covariances."""
  rng = np.random.default_rng(seed)
  means = np.stack([np.full(D, 0.4), np.linspace(0.45, 0.6, D)])
  a = rng.normal(size=(D, D)) * 0.015
  covs = np.stack([a @ a.T + 0.001 * np.eye(D), 0.0015 * np.eye(D) + 0.0005])
  x = np.concatenate([rng.multivariate_normal(means[k], covs[k], n_per_class) for k in (0, 1)])
  images = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).reshape((-1,) + SHAPE)
  return images, np.repeat([0, 1], n_per_class).astype(np.int64)


def _take(ds, n):
  out = [(b["image"].numpy(), b["label"].numpy()) for b in ds.take(n)]
  return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def test_samples_match_the_fit_within_sampling_error():
  images, labels = _synthetic(400)
  fit = gaussian.ClassConditionalGaussian.fit(images, labels, 2)
  x, y = _take(gaussian_stream.examples(images, labels, 2, 1000, run_seed=3), 20)
  assert x.dtype == np.uint8 and x.shape == (20000,) + SHAPE
  assert (y == np.arange(20000) % 2).all()       # image i has class i % K: balanced batches
  for k in (0, 1):
    s = x[y == k].reshape(-1, D) / 255.0
    n = len(s)
    cov = fit.covariance(k)
    sd = np.sqrt(np.diag(cov))
    # Means: 5 standard errors (24 coordinates; quantisation to 1/255 adds ~0.001 sd).
    assert np.all(np.abs(s.mean(axis=0) - fit.means[k]) < 5 * sd / np.sqrt(n) + 2e-4)
    # Covariances: the standard error of an entry is sqrt((s_ii s_jj + s_ij^2) / n); quantising
    # adds 1/(12 * 255^2) = 1.3e-6 to the diagonal.
    se = np.sqrt((np.outer(sd, sd) ** 2 + cov ** 2) / n)
    diff = np.cov(s, rowvar=False) - cov - np.eye(D) / (12 * 255.0**2)
    assert np.all(np.abs(diff) < 5 * se), np.max(np.abs(diff) / se)


def test_same_seed_same_images_also_after_a_resume(tmp_path):
  images, labels = _synthetic(30)

  def stream(seed):
    return gaussian_stream.examples(images, labels, 2, 48, run_seed=seed)
  a = _take(stream(7), 50)
  np.testing.assert_array_equal(a[0], _take(stream(7), 50)[0])
  assert not np.array_equal(a[0], _take(stream(8), 50)[0])

  # The training input itself: 16 real + 48 generated per batch; resume from its checkpoint in
  # a fresh pipeline (as a restarted process builds it), in the middle of a sampling batch
  # (1000 images = 20.8 training batches).
  def train_ds():
    # As rgd.training.loop builds it for GENERATED='gaussian'.
    generated_fn = lambda batch, pipelines, pipeline_id: gaussian_stream.examples(
        images, labels, 2, batch, 7, pipelines, pipeline_id)
    return datasets.make_train_dataset(images, labels, 2, 64, generated_pattern="gaussian",
                                       generated_fn=generated_fn, mixing_ratio=0.25, seed=7,
                                       augment=False)
  it = iter(train_ds())
  first = [next(it) for _ in range(25)]
  gen = np.concatenate([b["image"][0, 16:].numpy() for b in first])
  np.testing.assert_array_equal(gen, a[0][:25 * 48])
  assert all(int(b["is_real"][0].numpy().sum()) == 16 for b in first)
  np.testing.assert_allclose(first[0]["label"][0, 16:].numpy().max(axis=1), 0.95)  # smoothed
  path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
  after = [next(it)["image"].numpy() for _ in range(3)]
  resumed = iter(train_ds())
  tf.train.Checkpoint(iterator=resumed).restore(path)
  again = [next(resumed)["image"].numpy() for _ in range(3)]
  for u, v in zip(after, again):
    np.testing.assert_array_equal(u, v)
  np.testing.assert_array_equal(after[0][0, 16:], a[0][25 * 48:26 * 48])


def test_two_input_pipelines_share_the_sequence():
  images, labels = _synthetic(30)
  fit = gaussian_stream.fit(images, labels, 2)
  seed = gaussian_stream.generator_seed(0)
  p0 = [b[0].numpy() for b in gaussian_stream.sample_batches(fit, seed, 2, 0).take(2)]
  p1 = [b[0].numpy() for b in gaussian_stream.sample_batches(fit, seed, 2, 1).take(1)]
  np.testing.assert_array_equal(p0[0], fit.batch(0, seed=seed)[0])
  np.testing.assert_array_equal(p1[0], fit.batch(1, seed=seed)[0])
  np.testing.assert_array_equal(p0[1], fit.batch(2, seed=seed)[0])


def test_equals_the_records_tool_for_the_same_seed(tmp_path):
  """`tools/make_tfrecords.py --generator=gaussian` fitted on the run's training split writes
  the stream's first images (in its own shuffled order)."""
  x, y = datasets.load_split("digits", "train", num_validation=200)
  run_seed = 5
  out = str(tmp_path / "records")
  env = dict(os.environ, PYTHONPATH=ROOT)
  subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tfrecords.py"),
                  "--generator=gaussian", "--dataset=digits", "--fit_split=train",
                  "--num_validation=200", "--num_per_class=150",
                  f"--generator_seed={gaussian_stream.generator_seed(run_seed)}",
                  f"--output_dir={out}"], check=True, env=env, cwd=ROOT, capture_output=True)
  ds = tf.data.TFRecordDataset(sorted(glob.glob(os.path.join(out, "generated-*.tfrecord"))))
  recs = [tfrecord.parse_batch(b) for b in ds.batch(5000)]
  r_img = np.concatenate([r["image"].numpy() for r in recs])
  r_lab = np.concatenate([r["label"].numpy() for r in recs])
  s_img, s_lab = _take(gaussian_stream.examples(x, y, 10, 500, run_seed), 3)
  assert len(r_img) == len(s_img) == 1500

  def keyed(images, labels):  # the records tool shuffles: compare as sorted multisets
    rows = np.concatenate([labels[:, None].astype(np.uint8),
                           images.reshape(len(images), -1)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]
  np.testing.assert_array_equal(keyed(r_img, r_lab), keyed(s_img, s_lab))


def test_the_fit_sees_only_the_training_images():
  """The stream is fitted on the images it is given: rgd.train passes its training split."""
  images, labels = _synthetic(30)
  fit = gaussian_stream.fit(images[::2], labels[::2], 2)
  x, _ = _take(gaussian_stream.examples(images[::2], labels[::2], 2, 1000, 0), 1)
  ref = fit.batch(0, seed=gaussian_stream.generator_seed(0))[0]
  np.testing.assert_array_equal(x, ref)
  with pytest.raises(AssertionError):
    np.testing.assert_array_equal(x, gaussian_stream.fit(images, labels, 2).batch(
        0, seed=gaussian_stream.generator_seed(0))[0])
