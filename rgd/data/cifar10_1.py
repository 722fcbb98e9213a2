"""CIFAR-10.1 (Recht et al. 2018): 2,000 new test images drawn like CIFAR-10's, the
distribution-shift column of seed 003 Table 2.

Two sources, one result (uint8 [2000, 32, 32, 3], int64 labels in CIFAR-10's class order), both
registry names of rgd.data (`datasets.load_split(name, "test")`):
  * `cifar10_1`: tfds `cifar10_1` (config `v6`, the version seed 003 and RobustBench report;
    its only split is `test`);
  * `cifar10_1:DIR`: the released `.npy` pair from the authors' repository,
    `cifar10.1_v6_data.npy` and `cifar10.1_v6_labels.npy`, in a folder (a bucket works: read
    through tf.io.gfile, parsed with allow_pickle=False; `load_npy_pair`).
"""
import io
import posixpath

import numpy as np
import tensorflow as tf

from rgd.errors import DataError
from rgd.runtime import fileio

VERSION = "v6"
NUM_IMAGES = {"v4": 2021, "v6": 2000}


def _read_npy(path):
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: file not found (expected the CIFAR-10.1 release's .npy pair)")
  try:
    return np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False)
  except ValueError as e:  # an object array (only unpickling could read it) or a bad header
    raise DataError(f"{path}: not a plain .npy array ({e})") from e


def load_npy_pair(folder, version=VERSION):
  """(images, labels) from DIR/cifar10.1_{version}_data.npy and ..._labels.npy, checked."""
  data = posixpath.join(folder, f"cifar10.1_{version}_data.npy")
  labels_path = posixpath.join(folder, f"cifar10.1_{version}_labels.npy")
  images, labels = _read_npy(data), _read_npy(labels_path)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
    raise DataError(f"{data}: expected uint8 [N, 32, 32, 3], got {images.dtype} "
                    f"{list(images.shape)}")
  if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype,
                                                                          np.integer):
    raise DataError(f"{labels_path}: expected {len(images)} integer labels, got {labels.dtype} "
                    f"{list(labels.shape)}")
  if labels.min() < 0 or labels.max() > 9:
    raise DataError(f"{labels_path}: labels must be CIFAR-10 classes 0..9")
  return images, labels.astype(np.int64)
