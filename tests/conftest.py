"""Shared fixtures: small data sets written in the real formats, tiny models."""
import os

# Keep the suite quiet and reproducible on CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np
import pytest

import rgd  # noqa: F401  before TensorFlow loads: the suite runs TF's CPU kernels as users get them


def pytest_configure(config):
  # Tests over the per-engineer time budget (they still run in CI); `-m "not slow"` skips them.
  config.addinivalue_line("markers", "slow: end-to-end or attack tests slower than ~10 s")


def make_images(n, num_classes=10, size=32, seed=0):
  """Class-dependent images so that a tiny model can learn something: each class has its own
  mean colour, plus noise. Returns (uint8 [n, size, size, 3], int64 [n])."""
  rng = np.random.RandomState(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  colours = rng.uniform(0.2, 0.8, (num_classes, 3))
  images = colours[labels][:, None, None, :] + rng.normal(0, 0.1, (n, size, size, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int64)


def write_npz_dataset(folder, num_train=96, num_test=32, num_classes=10, size=32, seed=0):
  os.makedirs(folder, exist_ok=True)
  x, y = make_images(num_train + num_test, num_classes, size, seed)
  np.savez(os.path.join(folder, "train.npz"), image=x[:num_train], label=y[:num_train])
  np.savez(os.path.join(folder, "test.npz"), image=x[num_train:], label=y[num_train:])
  return folder


def write_cifar10_1_pair(folder, n=12, seed=0):
  """A CIFAR-10.1 release folder (cifar10.1_v6_data.npy / _labels.npy) of n random images;
  returns (images, labels)."""
  rng = np.random.RandomState(seed)
  os.makedirs(folder, exist_ok=True)
  images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
  labels = rng.randint(0, 10, n).astype(np.int64)
  np.save(os.path.join(folder, "cifar10.1_v6_data.npy"), images)
  np.save(os.path.join(folder, "cifar10.1_v6_labels.npy"), labels)
  return images, labels


@pytest.fixture
def npz_dataset(tmp_path):
  """A tiny CIFAR-shaped data set in the `npz:DIR` layout; returns DIR."""
  return write_npz_dataset(str(tmp_path / "data"))
