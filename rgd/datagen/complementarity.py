"""Complementarity and coverage of a generated set: seed 001 (Gowal et al. 2021) App. D, Alg. 1.

Setup (App. D "Diversity and complementarity"): N train images (class balanced), N test images
and N generated images (class balanced) go through a feature extractor g (Inception's last pooling
layer in the paper); the features are reduced to their top-100 PCA components, the PCA being
fitted on the real images only ("the PCA projection computed on the original data"). Then, for
each generated sample x_i:
  * complementarity: find its nearest neighbour among the 3N - 1 other images (train, test and
    the *other* generated ones) and count which set it lies in -> c_train, c_test, c_self
    (ideal: 1/3 each; a memorising model gives c_train = 1).
  * coverage: its nearest neighbour in the train set and in the test set; v_train (v_test) is the
    number of distinct train (test) images so matched, over N. "the CIFAR-10 train set covers
    52.27% of the test set" (footnote 16); two uniform random sets give about 55.6%.
Algorithm 1 line 7 removes x_i from D_self for the rest of the loop as printed; the text ("the
remaining 10K - 1 images") describes leaving out only x_i itself, which is what is done here.
Distances are Euclidean; exact ties go to train, then test, then self (and to the lower index).
"""
import os

import keras
import numpy as np
import tensorflow as tf

from rgd import models
from rgd.data import tfrecord
from rgd.datagen import inception, sources
from rgd.errors import ConfigError, DataError
from rgd.runtime import progress


def fit_pca(features, dim=100):
  """(mean [F], components [d, F]) of the top-`dim` principal directions (d <= min(n, F))."""
  x = np.asarray(features, np.float64)
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:min(dim, len(vt))]


def project(features, mean, components):
  return (np.asarray(features, np.float64) - mean) @ components.T


def nearest(queries, refs, exclude_diagonal=False, chunk=2048):
  """For each query, (squared distance, index) of its nearest ref. With `exclude_diagonal`
  (queries are refs), a point is not its own neighbour."""
  q = np.asarray(queries, np.float64)
  r = np.asarray(refs, np.float64)
  r2 = (r * r).sum(axis=1)
  best_d = np.empty(len(q))
  best_i = np.empty(len(q), np.int64)
  for s in range(0, len(q), chunk):
    qc = q[s:s + chunk]
    d = (qc * qc).sum(axis=1)[:, None] - 2.0 * qc @ r.T + r2[None]
    np.maximum(d, 0.0, out=d)
    if exclude_diagonal:
      rows = np.arange(len(qc))
      d[rows, s + rows] = np.inf
    best_i[s:s + chunk] = np.argmin(d, axis=1)  # First minimum: the lower index on ties.
    best_d[s:s + chunk] = d[np.arange(len(qc)), best_i[s:s + chunk]]
  return best_d, best_i


def complementarity_and_coverage(train, test, generated, pca_dim=100):
  """Algorithm 1 on feature vectors [n, F] of the three sets; returns a dict of the five
  ratios plus the set sizes and the PCA dimension used."""
  train, test, generated = (np.asarray(a, np.float64) for a in (train, test, generated))
  for name, a in (("train", train), ("test", test), ("generated", generated)):
    if a.ndim != 2 or len(a) < 2:
      raise DataError(f"{name} features must be [n >= 2, F], got {a.shape}")
  mean, comps = fit_pca(np.concatenate([train, test]), pca_dim)
  g_train, g_test, g_gen = (project(a, mean, comps) for a in (train, test, generated))
  n = len(g_gen)
  d_train, i_train = nearest(g_gen, g_train)
  d_test, i_test = nearest(g_gen, g_test)
  d_self, _ = nearest(g_gen, g_gen, exclude_diagonal=True)
  closest = np.argmin(np.stack([d_train, d_test, d_self]), axis=0)  # Ties: train, test, self.
  counts = np.bincount(closest, minlength=3)
  return {
      "c_train": counts[0] / n, "c_test": counts[1] / n, "c_self": counts[2] / n,
      "v_train": len(np.unique(i_train)) / len(g_train),
      "v_test": len(np.unique(i_test)) / len(g_test),
      "num_train": len(g_train), "num_test": len(g_test), "num_generated": n,
      "pca_dim": int(comps.shape[0]),
  }


# ----------------------------------------------------------------------------------------------
# Feature extractors: uint8 images [n, H, W, 3] -> float features [n, F].


def penultimate_extractor(model):
  """The input of the model's last Dense layer (after global pooling in every rgd model): the
  pseudo-labeller's own feature space, used when no Inception weights are available."""
  dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
  if not dense:
    raise ConfigError(f"model {model.name} has no Dense layer to take features before")
  features = keras.Model(model.input, dense[-1].input)
  return lambda images: features(np.asarray(images, np.float32) / 255.0, training=False)


INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def inception_extractor(weights_path, size=299):
  """InceptionV3's last pooling layer (2048-d), the paper's choice, from local weights
  (Keras' `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`); images are resized
  bilinearly to `size` and scaled to [-1, 1] as Inception expects. Not the network of
  published FIDs (`inception.inception_2015_extractor` is)."""
  model = keras.applications.InceptionV3(include_top=False, weights=weights_path,
                                         pooling="avg", input_shape=(size, size, 3))

  def extract(images):
    x = tf.image.resize(tf.cast(images, tf.float32), (size, size)) / 127.5 - 1.0
    return model(x, training=False)
  return extract


def default_path(name):
  """~/.keras/models/NAME, where Keras keeps downloaded weights."""
  return os.path.join(os.path.expanduser("~"), ".keras", "models", name)


# What each extractor's FID can be compared with (also in every report line of tools/fid.py).
COMPARABLE = {
    "inception_2015": "published FIDs (TTUR, pytorch-fid, NVlabs/edm: the same network)",
    "inception_v3": "only FIDs from Keras' ImageNet InceptionV3, not published FIDs",
    "labeler": "only FIDs from the same labeller, never published FIDs",
}


def choose_extractor(kind="auto", labeler=None, inception_weights=None, inception_graph=None):
  """(extractor, info) for tools/complementarity.py and tools/fid.py. `kind`:
  'inception_2015' (the Inception graph of published FIDs, from `inception_graph`, default
  ~/.keras/models/classify_image_graph_def.pb), 'inception_v3' (Keras' ImageNet InceptionV3 from
  local weights `inception_weights`), 'labeler' (penultimate layer of the Keras model at
  `labeler`), or 'auto' (the first of these whose file is there). `info` names the extractor and
  what its numbers compare with. Raises ConfigError naming what is missing."""
  graph = inception_graph or default_path(inception.GRAPH_FILE)
  weights = inception_weights or default_path(INCEPTION_WEIGHTS)
  if kind == "auto":
    kind = ("inception_2015" if tf.io.gfile.exists(graph) else
            "inception_v3" if tf.io.gfile.exists(weights) else "labeler")
  if kind == "inception_2015":
    if not tf.io.gfile.exists(graph):
      raise ConfigError(f"Inception 2015-12-05 graph not found at {graph}; put "
                        f"{inception.GRAPH_FILE} of inception-2015-12-05.tgz there (or pass "
                        "--inception_graph)")
    return inception.inception_2015_extractor(graph), {
        "extractor": "inception_2015 (Inception-v3 graph of 2015-12-05, pool_3, 2048-d)",
        "weights": graph, "comparable_with": COMPARABLE["inception_2015"]}
  if kind == "inception_v3":
    if not tf.io.gfile.exists(weights):
      raise ConfigError(f"InceptionV3 weights not found at {weights}; copy Keras' "
                        f"{INCEPTION_WEIGHTS} there or use --extractor=labeler")
    return inception_extractor(weights), {
        "extractor": "inception_v3 (Keras ImageNet InceptionV3 pool, 2048-d; inputs resized to "
                     "299)", "weights": weights, "comparable_with": COMPARABLE["inception_v3"]}
  if kind != "labeler":
    raise ConfigError(f"unknown extractor {kind!r}: expected auto, inception_2015, inception_v3 "
                      "or labeler")
  if not labeler:
    raise ConfigError("--extractor=labeler (the fallback without Inception weights) needs "
                      "--labeler")
  model = models.load(labeler)
  return penultimate_extractor(model), {
      "extractor": f"labeler penultimate layer ({model.name})", "weights": labeler,
      "comparable_with": COMPARABLE["labeler"]}


def extract_features(extractor, images, batch_size=256, progress=None):
  out = []
  for s in range(0, len(images), batch_size):
    out.append(np.asarray(extractor(images[s:s + batch_size]), np.float32))
    if progress is not None:
      progress.update(len(out[-1]))
  return np.concatenate(out)


def balanced_sample(labels, n, num_classes, seed, total=None):
  """Sorted indices of n items drawn at random: n // K per class (the remainder from the first
  classes) when `labels` are given, else uniformly from `total` items. Raises if there are too
  few."""
  rng = np.random.default_rng(seed)
  if labels is None:
    if total < n:
      raise DataError(f"{total} images, {n} needed")
    return np.sort(rng.choice(total, n, replace=False))
  labels = np.asarray(labels)
  picked = []
  for k in range(num_classes):
    m = n // num_classes + (k < n % num_classes)
    pool = np.flatnonzero(labels == k)
    if len(pool) < m:
      raise DataError(f"class {k} has {len(pool)} images, {m} needed for a class-balanced "
                      f"sample of {n}")
    picked.append(rng.choice(pool, m, replace=False))
  return np.sort(np.concatenate(picked))


# ----------------------------------------------------------------------------------------------
# The whole measurement of tools/complementarity.py.


def read_generated(path, n, num_classes, seed, cache_dir=None, balanced=True):
  """n class-balanced (when labelled) images and labels from a generated set: any
  `sources.open_source` input, or a glob of TFRecord shards (`*.tfrecord`). Shards are read
  from the start until every class has its share: tools/make_tfrecords.py writes records in a
  random order, so the first records are a uniform sample. `balanced=False` (FID) takes a
  uniform sample whatever the labels."""
  if path.endswith(".tfrecord"):
    want = np.array([n // num_classes + (k < n % num_classes) for k in range(num_classes)])
    images, labels, have = [], [], np.zeros(num_classes, np.int64)
    ds = tf.data.TFRecordDataset(tfrecord.list_shards(path)).batch(1024).map(tfrecord.parse_batch)
    for ex in ds:
      for im, y in zip(ex["image"].numpy(), ex["label"].numpy()):
        if not balanced and len(images) < n:
          images.append(im)
          labels.append(y)
        elif balanced and y < num_classes and have[y] < want[y]:
          images.append(im)
          labels.append(y)
          have[y] += 1
      if (have >= want).all() or (not balanced and len(images) >= n):
        break
    if not balanced:
      if len(images) < n:
        raise DataError(f"{path}: {len(images)} records, {n} needed")
      return np.stack(images), np.array(labels)
    if (have < want).any():
      raise DataError(f"{path}: too few records per class for a balanced sample of {n}: "
                      f"{have.tolist()}")
    return np.stack(images), np.array(labels)
  source = sources.open_source(path, cache_dir)
  if source.labels is not None:
    source.check_labels(num_classes)
  idx = balanced_sample(source.labels if balanced else None, n, num_classes, seed,
                        source.num_images)
  return source.take(idx), (None if source.labels is None else source.labels[idx])


def measure(train, test, generated, extractor, pca_dim=100, batch_size=256, stream=None):
  """Algorithm 1 on three (images, labels) sets through `extractor`; returns the dict of
  `complementarity_and_coverage`."""
  feats = []
  for name, (images, _) in (("train", train), ("test", test), ("generated", generated)):
    bar = progress.Progress(len(images), f"features ({name})", "img", stream=stream)
    feats.append(extract_features(extractor, images, batch_size, bar))
    bar.close()
  return complementarity_and_coverage(*feats, pca_dim=pca_dim)
