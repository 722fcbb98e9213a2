"""TinyImageNet and CIFAR-10.1 readers on miniature copies written in the real formats."""
import os

import numpy as np
import pytest
import tensorflow as tf

from rgd.data import cifar10_1, tiny_imagenet
from rgd.errors import DataError

WNIDS = [f"n{i:08d}" for i in range(tiny_imagenet.NUM_CLASSES)]


def _jpeg(path, value, grey=False):
  image = np.full((64, 64, 1 if grey else 3), value, np.uint8)
  tf.io.write_file(path, tf.io.encode_jpeg(image, quality=100))


def write_tiny_imagenet(root, per_class=2, num_val_classes=3):
  """A tiny-imagenet-200 folder: 200 wnids (listed unsorted, as in the release), `per_class`
  training JPEGs for each, one grey one, and a val/ folder with annotations."""
  os.makedirs(root)
  listed = WNIDS[::-1]  # the release's wnids.txt is not sorted
  with open(os.path.join(root, "wnids.txt"), "w") as f:
    f.write("\n".join(listed) + "\n")
  with open(os.path.join(root, "words.txt"), "w") as f:
    f.write("".join(f"{w}\tthing {i}, other name\n" for i, w in enumerate(WNIDS)))
  for i, wnid in enumerate(WNIDS):
    folder = os.path.join(root, "train", wnid, "images")
    os.makedirs(folder)
    for k in range(per_class):
      _jpeg(os.path.join(folder, f"{wnid}_{k}.JPEG"), i, grey=(i == 5 and k == 0))
  os.makedirs(os.path.join(root, "val", "images"))
  lines = []
  for j in range(num_val_classes):
    name = f"val_{j}.JPEG"
    _jpeg(os.path.join(root, "val", "images", name), 200 + j)
    lines.append(f"{name}\t{WNIDS[7 * j]}\t0\t0\t63\t63")
  with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return root


def test_tiny_imagenet_reads_decodes_and_caches(tmp_path):
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"))
  images, labels = tiny_imagenet.load(root, "train")
  assert images.shape == (400, 64, 64, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [2] * 200
  # Class index = position in the sorted wnids; pixel value i was written for class i (q=100
  # JPEG of a flat image decodes to within 1); the grey JPEG became RGB.
  np.testing.assert_allclose(images.reshape(400, -1).mean(1), labels, atol=1.0)
  # Stored in a fixed shuffled order, the same on every read.
  order = np.random.RandomState(0).permutation(400)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(200), 2)[order])
  val_images, val_labels = tiny_imagenet.load(root, "test")
  assert val_labels.tolist() == [0, 7, 14] and val_images.shape == (3, 64, 64, 3)
  cache = tiny_imagenet.cache_folder(root)
  assert sorted(tf.io.gfile.listdir(cache)) == ["test.npz", "train.npz"]
  # The second read comes from the cache: remove the JPEGs and read again.
  tf.io.gfile.rmtree(os.path.join(root, "train"))
  again, again_labels = tiny_imagenet.load(root, "train")
  np.testing.assert_array_equal(again, images)
  np.testing.assert_array_equal(again_labels, labels)
  assert tiny_imagenet.class_names(root, sorted(WNIDS))[3] == "thing 3"


@pytest.mark.parametrize("damage,message", [
    ("no_wnids", "wnids.txt: file not found"),
    ("short_wnids", "expected 200 wnids, found 199"),
    ("empty_class", "no training images for class"),
    ("bad_jpeg", "cannot decode as an image"),
    ("wrong_size", "expected a 64x64 image"),
    ("unknown_wnid", "val_annotations.txt:2: wnid 'n99999999' is not in wnids.txt"),
    ("missing_val_image", "val_annotations.txt:1:"),
])
def test_tiny_imagenet_malformed_folders_name_the_file(tmp_path, damage, message):
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"), per_class=1)
  split = "train"
  if damage == "no_wnids":
    os.remove(os.path.join(root, "wnids.txt"))
  elif damage == "short_wnids":
    with open(os.path.join(root, "wnids.txt"), "w") as f:
      f.write("\n".join(WNIDS[:199]))
  elif damage == "empty_class":
    os.remove(os.path.join(root, "train", WNIDS[9], "images", f"{WNIDS[9]}_0.JPEG"))
  elif damage == "bad_jpeg":
    with open(os.path.join(root, "train", WNIDS[4], "images", f"{WNIDS[4]}_0.JPEG"), "wb") as f:
      f.write(b"not a jpeg")
  elif damage == "wrong_size":
    path = os.path.join(root, "train", WNIDS[4], "images", f"{WNIDS[4]}_0.JPEG")
    tf.io.write_file(path, tf.io.encode_jpeg(np.zeros((32, 32, 3), np.uint8)))
  else:
    split = "test"
    path = os.path.join(root, "val", "val_annotations.txt")
    lines = open(path).read().splitlines()
    if damage == "unknown_wnid":
      lines[1] = "val_1.JPEG\tn99999999\t0\t0\t1\t1"
    else:
      os.remove(os.path.join(root, "val", "images", "val_0.JPEG"))
    open(path, "w").write("\n".join(lines))
  with pytest.raises(DataError, match=message):
    tiny_imagenet.load(root, split)
  # Nothing half-written: no cache file for the failed split.
  assert not tf.io.gfile.exists(os.path.join(tiny_imagenet.cache_folder(root), f"{split}.npz"))


def test_cifar10_1_npy_pair(tmp_path):
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (20, 32, 32, 3)).astype(np.uint8)
  labels = rng.randint(0, 10, 20).astype(np.int64)
  np.save(tmp_path / "cifar10.1_v6_data.npy", images)
  np.save(tmp_path / "cifar10.1_v6_labels.npy", labels)
  got, got_labels = cifar10_1.load_npy_pair(str(tmp_path))
  np.testing.assert_array_equal(got, images)
  np.testing.assert_array_equal(got_labels, labels)
  np.save(tmp_path / "cifar10.1_v6_labels.npy", np.array([object()] * 20))
  with pytest.raises(DataError, match="labels.npy: not a plain .npy array"):
    cifar10_1.load_npy_pair(str(tmp_path))
  np.save(tmp_path / "cifar10.1_v6_labels.npy", labels[:5])
  with pytest.raises(DataError, match="expected 20 integer labels"):
    cifar10_1.load_npy_pair(str(tmp_path))
  with pytest.raises(DataError, match="file not found"):
    cifar10_1.load_npy_pair(str(tmp_path / "nowhere"))
