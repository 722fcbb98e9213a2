"""`DATASET='digits'`: a real data set that needs no download (scikit-learn's handwritten digits).

scikit-learn ships the 1,797 8x8 grey digits of the UCI "Optical Recognition of Handwritten
Digits" set (BSD licence) inside its wheel (`sklearn.datasets.load_digits` reads a file of the
installed package; it never opens a network connection), which makes them the data set of rgd's
first run on a machine without network (README "Set up", gin/quickstart.gin).

How the images are made to look like the other sets (uint8 [N, 32, 32, 3]):
  * each pixel, an integer count 0..16, is scaled by 255/16 to [0, 255] (float);
  * the 8x8 image is resized to 32x32 with bilinear interpolation (`tf.image.resize`,
    half-pixel centres, no antialiasing: upsampling), then rounded and clipped to uint8;
  * the grey channel is repeated three times (RGB, so that every model and attack applies).
The split is fixed: the images are permuted by `numpy.random.RandomState(0).permutation(1797)`;
the first NUM_TEST = 597 (a third) are the test split and the other 1,200 the training split,
whose last `num_validation` images rgd.train holds out for validation, as for CIFAR-10. The same
arrays come out of `python tools/digits_npz.py --size=32 --num_test=597` as an `npz:DIR` set.
"""
import numpy as np

from rgd.errors import DataError

NAME = "digits"
NUM_CLASSES = 10
NUM_IMAGES = 1797
NUM_TEST = 597
SIZE = 32
SPLIT_SEED = 0
# Validation images for the digits runs (gin/quickstart.gin): a sixth of the 1,200 training
# images, as 1024 is of CIFAR-10's 50k only a fiftieth but leaves 1,000 to train on.
NUM_VALIDATION = 200


def convert(images_8x8, size=SIZE):
  """0..16 grey [N, 8, 8] -> uint8 [N, size, size, 3] (module docstring)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.asarray(images_8x8, np.float32)[..., None] * (255.0 / 16.0)
  x = tf.image.resize(x, (size, size), method="bilinear").numpy()
  return np.repeat(np.clip(np.round(x), 0, 255).astype(np.uint8), 3, axis=-1)


def load_all(size=SIZE, num_test=NUM_TEST, seed=SPLIT_SEED):
  """((train images, labels), (test images, labels)) of the fixed split."""
  try:
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError("DATASET='digits' needs scikit-learn, which ships the images (pip install "
                    "scikit-learn; `pip install -e .` installs it)") from e
  data = sk_datasets.load_digits()
  if len(data.target) != NUM_IMAGES:
    raise DataError(f"scikit-learn's digits hold {len(data.target)} images, expected "
                    f"{NUM_IMAGES}")
  x = convert(data.images, size)
  y = data.target.astype(np.int64)
  order = np.random.RandomState(seed).permutation(len(y))
  x, y = x[order], y[order]
  return (x[num_test:], y[num_test:]), (x[:num_test], y[:num_test])


_CACHE = {}


def load(source_split):
  """(images uint8 [N, 32, 32, 3], labels int64 [N]) of `train` (all 1,200) or `test` (597).
  Kept in memory after the first call (a few MB): a run reads the split several times."""
  if source_split not in ("train", "test"):
    raise DataError(f"digits: unknown source split {source_split!r}")
  if "all" not in _CACHE:
    _CACHE["all"] = load_all()
  train, test = _CACHE["all"]
  images, labels = train if source_split == "train" else test
  return images.copy(), labels.copy()
