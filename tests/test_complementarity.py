"""rgd.datagen.complementarity: seed 001 Algorithm 1 on feature sets with known answers."""
import numpy as np
import pytest

from conftest import make_images
from rgd.datagen import complementarity as comp
from rgd.models import get_model

# 2-d features, so the PCA keeps every direction and distances are unchanged.
TRAIN = np.array([[10.0 * i, 0.0] for i in range(6)])
TEST = np.array([[5.0 + 10.0 * i, 100.0] for i in range(6)])


def test_algorithm_1_on_a_constructed_set():
  generated = np.array([
      [41.0, 1.0],    # nearest: train 4 (dist 1.4);      train NN 4, test NN 4 (45, 100)
      [16.0, 99.0],   # nearest: test 1 (15, 100);        train NN 2 (20, 0)
      [24.0, 99.0],   # nearest: test 2 (25, 100);        train NN 2
      [200.0, -200.0], [201.0, -200.0], [200.0, -201.0],  # a tight cluster: nearest is self
  ])                                                      # train NN 5, test NN 5
  r = comp.complementarity_and_coverage(TRAIN, TEST, generated, pca_dim=100)
  # The paper's worked example (App. D): 1/6 train, 1/3 test, 1/2 self.
  assert (r["c_train"], r["c_test"], r["c_self"]) == (1 / 6, 2 / 6, 3 / 6)
  assert r["v_train"] == 3 / 6  # {4, 2, 5}
  assert r["v_test"] == 4 / 6   # {4, 1, 2, 5}
  assert r["pca_dim"] == 2 and r["num_generated"] == 6


def test_a_copy_of_the_train_set_is_all_train_and_full_coverage():
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
  r = comp.complementarity_and_coverage(train, test, train + 1e-9, pca_dim=5)
  assert (r["c_train"], r["c_test"], r["c_self"], r["v_train"]) == (1.0, 0.0, 0.0, 1.0)
  assert r["pca_dim"] == 5


def test_ties_go_to_train_then_test_and_a_sample_is_not_its_own_neighbour():
  train, test = np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([[2.0, 0.0], [9.0, -9.0]])
  # Each point is at distance 1 from a train, a test and (the other) generated point.
  generated = np.array([[1.0, 0.0], [1.0, 1.0]])
  r = comp.complementarity_and_coverage(train, test, generated)
  assert r["c_train"] == 0.5 and r["c_self"] == 0.5
  d, i = comp.nearest(generated, generated, exclude_diagonal=True)
  np.testing.assert_array_equal(i, [1, 0])
  np.testing.assert_allclose(d, [1.0, 1.0])


def test_pca_keeps_the_directions_of_largest_variance():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2000, 3)) * [5.0, 1.0, 0.1] + [3.0, -2.0, 7.0]
  mean, comps = comp.fit_pca(x, dim=2)
  np.testing.assert_allclose(mean, x.mean(axis=0))
  np.testing.assert_allclose(np.abs(comps), [[1, 0, 0], [0, 1, 0]], atol=0.02)
  np.testing.assert_allclose(comp.project(x, mean, comps).var(axis=0), [25.0, 1.0], rtol=0.1)


def test_balanced_sample():
  labels = np.repeat([0, 1, 2], [5, 3, 9])
  idx = comp.balanced_sample(labels, 7, 3, seed=0)
  assert np.bincount(labels[idx], minlength=3).tolist() == [3, 2, 2]
  assert len(set(idx)) == 7
  with pytest.raises(ValueError, match="class 1 has 3 images, 4 needed"):
    comp.balanced_sample(labels, 12, 3, seed=0)
  assert len(comp.balanced_sample(None, 4, 3, seed=0, total=10)) == 4


def test_penultimate_features_of_a_labeller_and_measure(tmp_path):
  model = get_model("tiny_cnn", num_classes=4, input_shape=(8, 8, 3), width=4)
  extractor = comp.penultimate_extractor(model)
  x, y = make_images(24, num_classes=4, size=8)
  feats = comp.extract_features(extractor, x, batch_size=10)
  pooled = model.get_layer("pool").output
  import keras
  expected = keras.Model(model.input, pooled)(x.astype(np.float32) / 255.0, training=False)
  assert feats.shape == (24, 16)
  np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)

  np.savez(tmp_path / "g.npz", image=x[:12], label=y[:12])
  gen = comp.read_generated(str(tmp_path / "g.npz"), 8, 4, seed=0)
  assert np.bincount(gen[1], minlength=4).tolist() == [2, 2, 2, 2]
  # The "generated" images are train images: all their nearest neighbours are in train.
  r = comp.measure((x[:12], y[:12]), (x[12:], y[12:]), gen, extractor, pca_dim=100)
  assert r["c_train"] == 1.0 and r["pca_dim"] == 16 and r["num_generated"] == 8
