"""rgd.datagen.labeling: exact top-k per class with deterministic ties; the Keras labeller."""
import keras
import numpy as np
import pytest

from rgd.errors import DataError
from rgd.datagen import labeling


def _brute_force_top_k(labels, scores, k, num_classes):
  kept = []
  for c in range(num_classes):
    items = sorted((-scores[i], i) for i in np.flatnonzero(labels == c))
    kept.append([i for _, i in items[:k]])
  return kept


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_top_k_per_class_is_exact_with_deterministic_ties(batch_size):
  rng = np.random.default_rng(0)
  n, num_classes, k = 600, 3, 25
  labels = rng.integers(0, num_classes, n)
  # Few distinct scores: many ties, which must go to the lower index.
  scores = rng.integers(0, 8, n).astype(np.float32) / 8
  selector = labeling.TopKPerClass(num_classes, k)
  for s in range(0, n, batch_size):
    selector.add(np.arange(s, min(s + batch_size, n)), labels[s:s + batch_size],
                 scores[s:s + batch_size])
  idx, lab, sc = selector.result()
  expected = _brute_force_top_k(labels, scores, k, num_classes)
  np.testing.assert_array_equal(idx, np.concatenate(expected))
  np.testing.assert_array_equal(lab, np.repeat(np.arange(num_classes), k))
  np.testing.assert_array_equal(sc, scores[idx].astype(np.float64))
  np.testing.assert_array_equal(selector.num_seen, np.bincount(labels, minlength=num_classes))


def test_top_k_does_not_depend_on_arrival_order_and_keeps_short_classes_whole():
  scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.7], np.float32)
  labels = np.array([0, 0, 0, 0, 0, 1])
  a = labeling.TopKPerClass(3, 3)
  a.add(np.arange(6), labels, scores)
  b = labeling.TopKPerClass(3, 3)
  for i in [5, 2, 4, 0, 3, 1]:
    b.add([i], labels[[i]], scores[[i]])
  for r in (a.result(), b.result()):
    # Class 0: 0.9 (index 1), 0.9 (index 3), 0.5 (index 0 beats index 2); class 1 has only one;
    # class 2 none.
    np.testing.assert_array_equal(r[0], [1, 3, 0, 5])
    np.testing.assert_array_equal(r[1], [0, 0, 0, 1])
  keep_all = labeling.TopKPerClass(3, None)
  keep_all.add(np.arange(6), labels, scores)
  np.testing.assert_array_equal(keep_all.result()[0], [1, 3, 0, 2, 4, 5])


def test_top_k_buffer_stays_bounded():
  selector = labeling.TopKPerClass(1, 10)
  for s in range(0, 1000, 5):
    selector.add(np.arange(s, s + 5), np.zeros(5, np.int64), np.arange(s, s + 5) % 97 / 97)
    assert selector._sizes[0] <= 2 * 10 + 5


def _colour_labeller(num_classes=3, saturate=1.0):
  """logits_c = saturate * 10 * mean of channel c: a known function of the image."""
  inputs = keras.Input((4, 4, 3))
  x = keras.layers.GlobalAveragePooling2D()(inputs)
  dense = keras.layers.Dense(num_classes)
  out = dense(x)
  dense.set_weights([np.eye(3, num_classes, dtype=np.float32) * 10 * saturate,
                     np.zeros(num_classes, np.float32)])
  return keras.Model(inputs, out, name="colour")


def test_labeller_returns_argmax_and_log_softmax():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (9, 4, 4, 3)).astype(np.uint8)
  labeler = labeling.Labeler(_colour_labeller())
  labels, logp = labeler(images)
  logits = images.reshape(9, 16, 3).mean(axis=1) / 255.0 * 10
  expected_logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  np.testing.assert_array_equal(labels, logits.argmax(axis=1))
  np.testing.assert_allclose(logp, expected_logp.max(axis=1), rtol=1e-5, atol=1e-6)
  probs = labeling.Labeler(keras.Sequential([_colour_labeller(), keras.layers.Softmax()]),
                           from_logits=False)
  labels2, logp2 = probs(images)
  np.testing.assert_array_equal(labels2, labels)
  np.testing.assert_allclose(logp2, logp, atol=1e-5)


def test_log_probabilities_rank_images_whose_softmax_saturates():
  images = np.zeros((2, 4, 4, 3), np.uint8)
  images[0, ..., 0], images[1, ..., 0] = 255, 200  # class 0, margins 100 and 78 after scaling
  labeler = labeling.Labeler(_colour_labeller(saturate=10.0))
  _, logp = labeler(images)
  logits = np.float32([[100, 0, 0], [78.43137, 0, 0]])
  # float32 softmax and log_softmax cannot tell them apart...
  np.testing.assert_array_equal(keras.ops.softmax(logits)[:, 0], [1.0, 1.0])
  np.testing.assert_array_equal(keras.ops.log_softmax(logits)[:, 0], [0.0, 0.0])
  # ...the float64 log1p form can: log p = -log(1 + 2 exp(-margin)).
  np.testing.assert_allclose(logp, -2 * np.exp(-logits[:, 0].astype(np.float64)), rtol=1e-4)
  assert logp[0] > logp[1]


def test_labeller_class_count_and_shape_mismatch():
  labeler = labeling.Labeler(_colour_labeller(), name="lab.keras")
  labeler.check(3, (4, 4, 3))
  with pytest.raises(DataError, match="labeller lab.keras has 3 classes but the data has 10"):
    labeler.check(10)
  with pytest.raises(DataError, match=r"takes images of shape \(4, 4, 3\), the data has "
                     r"\(32, 32, 3\)"):
    labeler.check(3, (32, 32, 3))
