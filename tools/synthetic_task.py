"""The synthetic test task of the evaluation cross-checks (crosscheck_autoattack.py,
mt_vs_apgdt.py): torch-free, so that tools without torch can share it."""
import numpy as np


def synthetic(n, seed, num_classes=10):
  """Class colour U(0.35, 0.65) + N(0, 0.25) noise, uint8 [n, 32, 32, 3]: close enough classes
  that an 8/255 perturbation fools some points of a robustly trained model."""
  rng = np.random.RandomState(seed)
  colours = np.random.RandomState(1234).uniform(0.35, 0.65, (num_classes, 3))
  labels = rng.randint(0, num_classes, n)
  images = colours[labels][:, None, None, :] + rng.normal(0, 0.25, (n, 32, 32, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int64)
