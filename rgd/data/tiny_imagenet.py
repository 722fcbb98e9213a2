"""TinyImageNet (Le & Yang 2015) from the folder users download, decoded once into a cache.

Stanford's `tiny-imagenet-200.zip` unpacks to:

    tiny-imagenet-200/wnids.txt                    200 WordNet ids, one per line
    tiny-imagenet-200/words.txt                    wnid <TAB> names (optional; class names)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 64x64 images per class
    tiny-imagenet-200/val/images/*.JPEG            10,000 images
    tiny-imagenet-200/val/val_annotations.txt      file <TAB> wnid <TAB> box (4 numbers)

The test images have no public labels, so seed 001 (Table 2) reports on the 10,000 validation
images: rgd's `test` split is the folder's `val/`. Class indices follow the sorted wnids (the
order of torchvision's ImageFolder, which the references' loaders use); `wnids.txt` itself is
not sorted, so the index is never its line number.

Decoding 110,000 JPEGs takes minutes, so the first read writes `train.npz` and `test.npz`
(the `npz:DIR` layout of rgd.data) into a cache folder beside the data (or `cache_dir`), and
later reads load those. The training images are stored in a fixed pseudo-random order (seed 0),
so that the last images of the split, which rgd holds out for validation, cover every class as
CIFAR-10's do, rather than being the last classes of the folder. Everything goes through
tf.io.gfile, so the folder and the cache may be in a bucket.
"""
import posixpath

import numpy as np
import tensorflow as tf

from rgd.data import sources
from rgd.errors import DataError
from rgd.runtime import fileio

NUM_CLASSES = 200
IMAGE_SIZE = 64
CACHE_VERSION = 1
SHUFFLE_SEED = 0


def _read_lines(path):
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: file not found (is this a tiny-imagenet-200 folder?)")
  return [l.strip() for l in fileio.read_bytes(path).decode("utf-8").splitlines() if l.strip()]


def read_wnids(folder):
  """The 200 wnids in class-index order (sorted), checked."""
  path = posixpath.join(folder, "wnids.txt")
  wnids = _read_lines(path)
  if len(wnids) != len(set(wnids)):
    raise DataError(f"{path}: repeated wnids")
  if len(wnids) != NUM_CLASSES:
    raise DataError(f"{path}: expected {NUM_CLASSES} wnids, found {len(wnids)}")
  return sorted(wnids)


def class_names(folder, wnids):
  """The first name of each class from words.txt (its wnid if words.txt lacks it or is absent)."""
  path = posixpath.join(folder, "words.txt")
  names = {}
  if tf.io.gfile.exists(path):
    for line in _read_lines(path):
      wnid, _, words = line.partition("\t")
      names[wnid] = words.split(",")[0].strip()
  return [names.get(w, w) for w in wnids]


def _decode(path):
  try:
    image = tf.io.decode_image(fileio.read_bytes(path), channels=3, expand_animations=False)
  except tf.errors.OpError as e:
    raise DataError(f"{path}: cannot decode as an image ({e.message.splitlines()[0]})") from e
  if tuple(image.shape) != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise DataError(f"{path}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} image, got "
                    f"{tuple(image.shape)}")
  return image.numpy()  # uint8; some TinyImageNet JPEGs are grey, channels=3 makes them RGB


def _decode_all(paths, labels, source):
  if not paths:
    raise DataError(f"{source}: no images")
  images = np.stack([_decode(p) for p in paths])
  return images, np.asarray(labels, np.int64)


def read_train(folder, wnids):
  paths, labels = [], []
  for index, wnid in enumerate(wnids):
    pattern = posixpath.join(folder, "train", wnid, "images", "*.JPEG")
    found = sorted(tf.io.gfile.glob(pattern))
    if not found:
      raise DataError(f"{posixpath.dirname(pattern)}: no training images for class {wnid}")
    paths += found
    labels += [index] * len(found)
  images, labels = _decode_all(paths, labels, posixpath.join(folder, "train"))
  order = np.random.RandomState(SHUFFLE_SEED).permutation(len(labels))
  return images[order], labels[order]


def read_val(folder, wnids):
  path = posixpath.join(folder, "val", "val_annotations.txt")
  index = {w: i for i, w in enumerate(wnids)}
  paths, labels = [], []
  for number, line in enumerate(_read_lines(path), 1):
    fields = line.split("\t")
    if len(fields) < 2:
      raise DataError(f"{path}:{number}: expected 'file<TAB>wnid<TAB>box', got {line!r}")
    if fields[1] not in index:
      raise DataError(f"{path}:{number}: wnid {fields[1]!r} is not in wnids.txt")
    image_path = posixpath.join(folder, "val", "images", fields[0])
    if not tf.io.gfile.exists(image_path):
      raise DataError(f"{path}:{number}: {image_path} not found")
    paths.append(image_path)
    labels.append(index[fields[1]])
  return _decode_all(paths, labels, path)


def cache_folder(folder, cache_dir=None):
  return cache_dir or posixpath.join(folder.rstrip("/") + "_rgd_cache", f"v{CACHE_VERSION}")


def load(folder, split, cache_dir=None):
  """(images uint8 [N, 64, 64, 3], labels int64 [N]) of `split` ('train' or 'test' = val/).

  The first call for a split decodes the JPEGs and writes CACHE/{split}.npz atomically (a crash
  leaves no half-written cache); later calls read the cache."""
  if split not in ("train", "test"):
    raise DataError(f"TinyImageNet: unknown split {split!r}; 'train' or 'test' (val/)")
  if not tf.io.gfile.isdir(folder):
    raise DataError(f"{folder}: no such folder (expected Stanford's tiny-imagenet-200)")
  cache = posixpath.join(cache_folder(folder, cache_dir), f"{split}.npz")
  if tf.io.gfile.exists(cache):
    try:  # checked as any npz set; a truncated cache names itself
      return sources.load_npz(cache, NUM_CLASSES)
    except DataError as e:
      raise DataError(f"{e} (a TinyImageNet cache: delete it to decode {folder} again)") from e
  wnids = read_wnids(folder)
  images, labels = (read_train if split == "train" else read_val)(folder, wnids)
  fileio.makedirs(posixpath.dirname(cache))
  fileio.save_npz(cache, image=images, label=labels)
  return images, labels
