"""DATASET='digits' (rgd.data.digits): the built-in real data set, read without any network."""
import importlib.util
import os
import socket

import numpy as np
import pytest

from rgd import models
from rgd.data import datasets, digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_network(monkeypatch):
  """Any TCP connection attempt fails the test."""
  attempts = []

  def refuse(self, address, *args, **kwargs):
    attempts.append(address)
    raise AssertionError(f"network connection attempted: {address}")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)
  return attempts


def test_splits_shapes_dtypes_and_labels_fixed_by_the_seed(no_network, monkeypatch):
  monkeypatch.setattr(digits, "_CACHE", {})   # load from scikit-learn now, under the fixture
  x, y = datasets.load_split("digits", "train", num_validation=200)
  xv, yv = datasets.load_split("digits", "validation", num_validation=200)
  xf, yf = datasets.load_split("digits", "train_full", num_validation=200)
  xt, yt = datasets.load_split("digits", "test")
  assert no_network == []
  assert (x.shape, xv.shape, xf.shape, xt.shape) == (
      (1000, 32, 32, 3), (200, 32, 32, 3), (1200, 32, 32, 3), (597, 32, 32, 3))
  assert x.dtype == xt.dtype == np.uint8 and y.dtype == yt.dtype == np.int64
  # Validation is the end of the training split, as for CIFAR-10.
  np.testing.assert_array_equal(np.concatenate([x, xv]), xf)
  np.testing.assert_array_equal(np.concatenate([y, yv]), yf)
  # The split is fixed: RandomState(0)'s permutation of scikit-learn's order.
  assert np.bincount(yf).tolist() == [129, 121, 114, 128, 131, 117, 114, 123, 105, 118]
  assert np.bincount(yt).tolist() == [49, 61, 63, 55, 50, 65, 67, 56, 69, 62]
  from sklearn import datasets as sk  # pylint: disable=g-import-not-at-top
  order = np.random.RandomState(0).permutation(1797)
  np.testing.assert_array_equal(yt, sk.load_digits().target[order[:597]])
  np.testing.assert_array_equal(yf, sk.load_digits().target[order[597:]])
  # Grey: the three channels are equal; the full range is used.
  assert (xf[..., 0] == xf[..., 2]).all() and xf.max() == 255 and xf.min() == 0
  assert datasets.num_classes_of("digits") == 10


def test_conversion_by_hand():
  """0..16 -> 0..255, then bilinear 8 -> 32 with half-pixel centres: output pixel i reads the
  input at (i + 0.5) / 4 - 0.5."""
  img = np.zeros((1, 8, 8))
  img[0, 0, 0], img[0, 0, 1] = 16, 8       # 255 and 127.5
  out = digits.convert(img)
  assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
  assert out[0, 0, 0, 0] == 255            # clamped to the corner pixel
  # Row 0 (y clamped to input row 0), column 5: x = 5.5 / 4 - 0.5 = 0.875 between columns 0
  # and 1: 0.125 * 255 + 0.875 * 127.5 = 143.4375 -> 143.
  assert out[0, 0, 5, 0] == 143
  # Row 5, column 5: also 0.875 of the way to row 1 (all zero): 0.125 * 143.4375 = 17.93 -> 18.
  assert out[0, 5, 5, 0] == 18
  assert digits.convert(np.full((1, 8, 8), 16.0)).min() == 255


def test_normalisation_statistics_are_the_training_images():
  x, _ = datasets.load_split("digits", "train_full", num_validation=200)
  f = x.astype(np.float64) / 255.0
  mean, std = models.NORMALIZATION["digits"]
  np.testing.assert_allclose(mean, f.mean(axis=(0, 1, 2)), atol=5e-5)
  np.testing.assert_allclose(std, f.std(axis=(0, 1, 2)), atol=5e-5)


def test_the_npz_tool_writes_the_same_arrays():
  spec = importlib.util.spec_from_file_location("digits_npz",
                                                os.path.join(ROOT, "tools", "digits_npz.py"))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  (x, y), (xt, yt) = tool.digits(size=32, num_test=597)
  np.testing.assert_array_equal(x, datasets.load_split("digits", "train_full")[0])
  np.testing.assert_array_equal(yt, datasets.load_split("digits", "test")[1])
  # Its own default (16x16, 297 test images, docs/certified.md) is unchanged.
  (x16, _), (xt16, _) = tool.digits()
  assert x16.shape == (1500, 16, 16, 3) and xt16.shape == (297, 16, 16, 3)


def test_unknown_dataset_names_digits():
  with pytest.raises(Exception, match="'digits'"):
    datasets.load_split("digitz", "train")
