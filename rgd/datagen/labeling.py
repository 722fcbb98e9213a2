"""Pseudo-labelling generated images with a non-robust classifier, and per-class filtering.

Seed 001 App. D: a non-robust WRN-28-10 (95.7% clean accuracy) gives every generated image a
label; for some generators "we sample 5M images and score each image using the [...] model used
for pseudo-labeling. For each class, we select the top-100K scoring images" (after Carmon et
al. 2019). DM-Improves-AT keeps the top 20% of 5M the same way.

An image's label is the classifier's argmax and its score is the log-softmax of that label.
Ranking by log-probability (computed in float64 with log1p) rather than the softmax itself
keeps confident images apart: once the logit margin exceeds ~17 the float32 softmax (and
float32 log_softmax) of an image is exactly 1.0 (0.0), while -log1p(sum_j exp(z_j - z_y)) still
differs between images. `TopKPerClass` selects in a bounded buffer per class (at most 2k
candidates + one batch), so scoring 5M images needs memory for the kept ones only. Ties in
score are broken by the input index, lower first, so the selection does not depend on batch
size or order.
"""
import os

import numpy as np
import tensorflow as tf

from rgd import models
from rgd.errors import ConfigError, DataError
from rgd.runtime import digest


class Labeler:
  """A Keras classifier in inference mode: uint8 images -> (labels, log-probabilities).

  `from_logits`: the model returns logits (every rgd model does); False for a model that ends in
  a softmax.
  """

  def __init__(self, model, from_logits=True, name=None):
    self.model = model
    self.from_logits = from_logits
    self.name = name or model.name
    self.path = None
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2:
      raise DataError(f"labeller {self.name}: expected one output [batch, classes], got {shape}")
    self.num_classes = int(shape[-1])
    self.input_shape = tuple(model.input_shape[1:])
    self._predict = tf.function(self._scores, reduce_retracing=True)

  @classmethod
  def load(cls, path, from_logits=True):
    try:
      model = models.load(path)
    except (ValueError, OSError) as e:
      raise DataError(f"{path}: cannot load the labeller as a Keras model ({e})") from e
    labeler = cls(model, from_logits, name=path)
    labeler.path = path
    return labeler

  def describe(self):
    """JSON-able identity for metadata.json (the file's sha256 pins the exact weights)."""
    return {"name": self.name, "num_classes": self.num_classes, "from_logits": self.from_logits,
            "path": None if self.path is None else (
                self.path if "://" in self.path else os.path.abspath(self.path)),
            "sha256": None if self.path is None else digest.sha256_file(self.path)}

  def check(self, num_classes=None, image_shape=None):
    """Raises if the labeller's classes or input shape do not match the data."""
    if num_classes is not None and self.num_classes != num_classes:
      raise DataError(f"labeller {self.name} has {self.num_classes} classes but the data has "
                      f"{num_classes}; use a labeller trained on the same classes")
    if image_shape is not None and None not in self.input_shape and \
        tuple(image_shape) != self.input_shape:
      raise DataError(f"labeller {self.name} takes images of shape {self.input_shape}, the data "
                      f"has {tuple(image_shape)}")

  def _scores(self, images):
    x = tf.cast(images, tf.float32) / 255.0  # rgd models take [0, 1] and normalise inside.
    out = tf.cast(self.model(x, training=False), tf.float64)
    label = tf.argmax(out, axis=-1)
    if not self.from_logits:
      return label, tf.math.log(tf.reduce_max(out, axis=-1))
    # log p_y = -log(1 + sum_{j != y} exp(z_j - z_y)), with log1p in float64: exact for
    # margins up to ~700, where log_softmax in float32 rounds to 0 beyond a margin of ~17.
    others = tf.exp(out - tf.reduce_max(out, axis=-1, keepdims=True))
    others *= 1.0 - tf.one_hot(label, tf.shape(out)[-1], dtype=tf.float64)
    return label, -tf.math.log1p(tf.reduce_sum(others, axis=-1))

  def __call__(self, images):
    """uint8 [n, H, W, 3] -> (labels int64 [n], log p(label) float64 [n])."""
    labels, logp = self._predict(tf.convert_to_tensor(images))
    return labels.numpy().astype(np.int64), logp.numpy()


def rank_order(scores, indices):
  """Positions sorting by score (descending), then index (ascending): the deterministic
  ranking used for filtering."""
  return np.lexsort((indices, -np.asarray(scores, np.float64)))


class TopKPerClass:
  """Keeps the k highest-scoring items of each class from a stream of (index, label, score).

  With `k=None` it keeps everything. Memory: at most 2k + (one batch) candidates per class.
  """

  def __init__(self, num_classes, k=None):
    if k is not None and k < 1:
      raise ConfigError(f"k must be positive, got {k}")
    self.num_classes = num_classes
    self.k = k
    self._buffers = [[] for _ in range(num_classes)]
    self._sizes = np.zeros(num_classes, np.int64)
    self.num_seen = np.zeros(num_classes, np.int64)  # Per predicted class, before filtering.

  def add(self, indices, labels, scores):
    indices = np.asarray(indices, np.int64)
    labels = np.asarray(labels, np.int64)
    scores = np.asarray(scores, np.float64)
    for c in np.unique(labels):
      rows = labels == c
      self._buffers[c].append((indices[rows], scores[rows]))
      n = int(rows.sum())
      self._sizes[c] += n
      self.num_seen[c] += n
      if self.k is not None and self._sizes[c] > 2 * self.k:
        self._compact(c)

  def _compact(self, c):
    idx = np.concatenate([b[0] for b in self._buffers[c]])
    sc = np.concatenate([b[1] for b in self._buffers[c]])
    keep = rank_order(sc, idx)
    if self.k is not None:
      keep = keep[:self.k]
    self._buffers[c] = [(idx[keep], sc[keep])]
    self._sizes[c] = len(keep)

  def result(self):
    """(indices, labels, scores) of the kept items, class by class, best first."""
    out = [], [], []
    for c in range(self.num_classes):
      if self._buffers[c]:
        self._compact(c)
        idx, sc = self._buffers[c][0]
      else:
        idx, sc = np.zeros(0, np.int64), np.zeros(0, np.float64)
      out[0].append(idx)
      out[1].append(np.full(len(idx), c, np.int64))
      out[2].append(sc)
    return tuple(np.concatenate(parts) for parts in out)


def label_source(source, labeler, selector, batch_size=256, progress=None):
  """Labels every image of `source` in batches and feeds the selector."""
  for start, images in source.batches(batch_size):
    labels, scores = labeler(images)
    selector.add(np.arange(start, start + len(images)), labels, scores)
    if progress is not None:
      progress.update(len(images))
  return selector.result()
