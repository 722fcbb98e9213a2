"""The data sets of the seeds' tables through the registry, on small data in the real formats:
tfds' mock data for cifar100 / svhn_cropped / cifar10_1 (offline), a miniature
tiny-imagenet-200 folder and CIFAR-10.1 .npy pair; the crop padding modes; SVHN never flipped;
each data set's statistics inside the model and its export."""
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import make_images, write_cifar10_1_pair
from test_data_tiny_imagenet import WNIDS, write_tiny_imagenet
from rgd import cli, models
from rgd.data import class_names, datasets, recalibration, registry, tiny_imagenet
from rgd.errors import DataError
from rgd.training import loop


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize("name,num_classes,normalization,flip", [
    ("cifar100", 100, "cifar100", True), ("svhn_cropped", 10, "svhn", False),
    ("cifar10_1", 10, "cifar10", True)])
def test_tfds_sets_load_through_the_registry(name, num_classes, normalization, flip):
  with tfds.testing.mock_data(num_examples=40):
    x, y = datasets.load_split(name, "test")
    x2, y2 = datasets.load_split(name, "test")
  assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
  assert 0 <= y.min() and y.max() < num_classes
  np.testing.assert_array_equal(x, x2)  # mock data is deterministic: the later tests rely on it
  spec = registry.get(name)
  assert (spec.num_classes, spec.normalization, spec.flip) == (num_classes, normalization, flip)
  assert registry.num_classes_of(name) == num_classes
  assert len(registry.class_names_of(name)) == num_classes


def test_class_names_are_in_label_order():
  names = registry.class_names_of("cifar100")
  assert names[:3] == ["apple", "aquarium_fish", "baby"] and names[-1] == "worm"
  assert names == sorted(names)  # CIFAR-100's fine labels are alphabetical
  assert registry.class_names_of("cifar10")[3] == "cat"
  assert registry.class_names_of("svhn_cropped") == [str(d) for d in range(10)]
  assert registry.class_names_of("cifar10_1") == list(class_names.CIFAR10)
  assert registry.class_names_of("npz:/somewhere") is None


def test_cifar10_1_is_test_only():
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(DataError, match="cifar10_1: no 'train' split"):
      datasets.load_split("cifar10_1", "train")


def test_cifar10_1_npy_pair_through_the_registry(tmp_path):
  images, labels = write_cifar10_1_pair(str(tmp_path / "c101"))
  x, y = datasets.load_split(f"cifar10_1:{tmp_path / 'c101'}", "test")
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, labels)
  with pytest.raises(DataError, match="no 'train' split"):
    datasets.load_split(f"cifar10_1:{tmp_path / 'c101'}", "train")
  os.remove(tmp_path / "c101" / "cifar10.1_v6_labels.npy")
  with pytest.raises(DataError, match="cifar10.1_v6_labels.npy: file not found"):
    datasets.load_split(f"cifar10_1:{tmp_path / 'c101'}", "test")


def test_tiny_imagenet_through_the_registry(tmp_path):
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"))
  name = f"tiny_imagenet:{root}"
  spec = registry.get(name)
  assert (spec.num_classes, spec.image_size, spec.normalization, spec.flip) == (
      200, (64, 64), "tiny_imagenet", True)
  x, y = datasets.load_split(name, "train", num_validation=40)
  xv, yv = datasets.load_split(name, "validation", num_validation=40)
  assert x.shape == (360, 64, 64, 3) and xv.shape == (40, 64, 64, 3)
  # The cache's shuffled order puts images of many classes among the held-out ones.
  assert len(set(yv.tolist())) > 30
  # Class index k is the k-th sorted wnid: its images were written with pixel value k.
  np.testing.assert_allclose(xv.reshape(40, -1).mean(1), yv, atol=1.0)
  test_x, test_y = datasets.load_split(name, "test")
  assert test_y.tolist() == [0, 7, 14] and test_x.shape == (3, 64, 64, 3)
  names = registry.class_names_of(name)
  assert len(names) == 200 and names[7] == "thing 7" and WNIDS == sorted(WNIDS)
  # Read again from the cache alone.
  tf.io.gfile.rmtree(os.path.join(root, "val"))
  np.testing.assert_array_equal(datasets.load_split(name, "test")[1], test_y)


@pytest.mark.parametrize("break_it,match", [
    (lambda root: os.remove(os.path.join(root, "wnids.txt")), "wnids.txt: file not found"),
    (lambda root: open(os.path.join(root, "wnids.txt"), "w").write("n1\nn2\n"),
     "wnids.txt: expected 200 wnids, found 2"),
    (lambda root: tf.io.gfile.rmtree(os.path.join(root, "train", WNIDS[3])),
     f"train/{WNIDS[3]}/images: no training images for class {WNIDS[3]}"),
    (lambda root: open(os.path.join(root, "train", WNIDS[4], "images", "x.JPEG"), "wb").write(
        b"not a jpeg"), "x.JPEG: cannot decode as an image"),
])
def test_tiny_imagenet_malformed_folder_names_the_file(tmp_path, break_it, match):
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"), per_class=1)
  break_it(root)
  with pytest.raises(DataError, match=match):
    datasets.load_split(f"tiny_imagenet:{root}", "train_full")


def test_tiny_imagenet_truncated_cache_names_itself(tmp_path):
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"), per_class=1)
  datasets.load_split(f"tiny_imagenet:{root}", "test")
  cache = os.path.join(tiny_imagenet.cache_folder(root), "test.npz")
  data = open(cache, "rb").read()
  open(cache, "wb").write(data[:len(data) // 2])
  with pytest.raises(DataError, match=r"test.npz: not a valid npz file.*delete it to decode"):
    datasets.load_split(f"tiny_imagenet:{root}", "test")


def test_tiny_imagenet_missing_folder_and_bad_val_line(tmp_path):
  with pytest.raises(DataError, match="nowhere: no such folder"):
    datasets.load_split(f"tiny_imagenet:{tmp_path / 'nowhere'}", "test")
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"), per_class=1)
  with open(os.path.join(root, "val", "val_annotations.txt"), "a") as f:
    f.write("val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
  with pytest.raises(DataError, match=r"val_annotations.txt:4: wnid 'n99999999' is not in"):
    datasets.load_split(f"tiny_imagenet:{root}", "test")
  with pytest.raises(DataError, match="no folder after 'tiny_imagenet:'"):
    registry.get("tiny_imagenet:")


# ---------------------------------------------------------------------------------------------
# The crop's padding modes, against numpy's np.pad of the same mode.


@pytest.mark.parametrize("mode,np_mode", [("constant", "constant"), ("edge", "edge"),
                                          ("reflect", "reflect")])
@pytest.mark.parametrize("pad", [3, 5])
def test_pad_modes_crop_windows_of_numpys_padding(mode, np_mode, pad):
  x = np.random.RandomState(0).randint(0, 256, (24, 8, 8, 3)).astype(np.uint8)
  seed = tf.constant([1, 2])
  out = datasets.pad_crop_flip(tf.constant(x), seed, pad=pad, flip=False, pad_mode=mode).numpy()
  ref = datasets.pad_crop_flip(tf.constant(x), seed, pad=pad, flip=False).numpy()
  padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode=np_mode)
  zero_padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  offsets = set()
  for i in range(24):
    # The same offset as the constant mode's crop (the offsets do not depend on the mode).
    hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
            if np.array_equal(ref[i], zero_padded[i, dy:dy + 8, dx:dx + 8])
            and np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
    assert hits, i
    offsets.add(hits[0])
  assert len(offsets) > 5
  if mode != "constant":  # edge and reflect never show the zeros of constant padding
    assert not np.array_equal(out, ref)


def test_baseline_augmentation_is_bound_by_gin():
  assert datasets.baseline_augmentation() == dict(pad=4, pad_mode="constant", flip=True)
  assert datasets.baseline_augmentation(dataset_flip=False)["flip"] is False
  gin.parse_config("baseline_augmentation.pad = 3\nbaseline_augmentation.pad_mode = 'edge'")
  assert datasets.baseline_augmentation(dataset_flip=False) == dict(pad=3, pad_mode="edge",
                                                                    flip=False)
  gin.clear_config()
  gin.parse_config("baseline_augmentation.pad_mode = 'wrap'")
  with pytest.raises(ValueError, match="pad_mode='wrap'"):
    datasets.baseline_augmentation()


# ---------------------------------------------------------------------------------------------
# The training path: flip per data set, statistics per data set.


def _windows(images, pad=4, mirrored=False):
  padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  h = images.shape[1]
  out = set()
  for im in padded:
    for dy in range(2 * pad + 1):
      for dx in range(2 * pad + 1):
        w = im[dy:dy + h, dx:dx + h]
        out.add((w[:, ::-1] if mirrored else w).tobytes())
  return out


def _first_batch(dataset, num_examples=24):
  cli.parse_gin(["gin/debug.gin"], [f"DATASET='{dataset}'", "BATCH_SIZE=24"])
  with tfds.testing.mock_data(num_examples=num_examples):
    inputs = loop.create_input(tf.distribute.get_strategy(), loop.InputConfig(
        dataset, num_classes=None, batch_size=24, num_epochs=1, epoch_size=50_000, num_steps=1,
        generated_pattern=None, mixing_ratio=0.3, augment=True, batch_augmentation=None,
        num_validation=0, seed=0, data_dir=None, generated_label_smoothing=0.1))
  return inputs, next(inputs.iterator)["image"].numpy()[0]


@pytest.mark.parametrize("dataset,flips", [("svhn_cropped", False), ("cifar100", True)])
def test_svhn_training_batches_are_never_mirrored(dataset, flips):
  """Every SVHN training image is an unmirrored pad-4 window of a training image; the same test
  on CIFAR-100 finds mirrored ones (so it would fail if SVHN were flipped)."""
  inputs, batch = _first_batch(dataset)
  plain, mirrored = _windows(inputs.images), _windows(inputs.images, mirrored=True)
  is_mirrored = [im.tobytes() in mirrored and im.tobytes() not in plain for im in batch]
  assert all(im.tobytes() in plain | mirrored for im in batch)
  assert any(is_mirrored) == flips


def _normalize_layer(model):
  layer = model.get_layer("normalize")
  return np.ravel(layer.mean), np.sqrt(np.ravel(layer.variance))


@pytest.mark.parametrize("dataset,key", [("cifar100", "cifar100"), ("svhn_cropped", "svhn"),
                                         ("cifar10", "cifar10")])
def test_dataset_statistics_reach_the_model_unless_gin_sets_them(dataset, key):
  cli.parse_gin(["gin/debug.gin"], [f"DATASET='{dataset}'"])
  model = models.get_model(num_classes=10, **registry.model_normalization(dataset))
  mean, std = _normalize_layer(model)
  np.testing.assert_allclose(mean, models.NORMALIZATION[key][0], rtol=1e-6)
  np.testing.assert_allclose(std, models.NORMALIZATION[key][1], rtol=1e-6)
  gin.clear_config()
  cli.parse_gin(["gin/debug.gin"], [f"DATASET='{dataset}'", "get_model.normalization='none'"])
  assert registry.model_normalization(dataset) == {}


@pytest.mark.parametrize("dataset,mean,std", [
    # zbh2047/SortNet `dataset.py` (= L_inf-dist-net-v2's): per-channel mean, one scalar std.
    ("cifar10", (0.4914, 0.4822, 0.4465), 0.2009),
    ("cifar100", (0.5071, 0.4867, 0.4408), 0.2667),
    # Not in the references: rgd's mean, the mean of rgd's per-channel stds.
    ("svhn_cropped", models.SVHN_MEAN, (0.1980 + 0.2010 + 0.1970) / 3)])
@pytest.mark.parametrize("name", ["linf_dist_net-3-8", "sortnet-3-8"])
def test_certified_linf_models_take_the_data_sets_reference_statistics(dataset, mean, std, name):
  """The l_inf models normalise with their references' statistics of the run's data set (not
  CIFAR-10's everywhere), and eps / std follows."""
  cli.parse_gin(["gin/debug.gin"], [f"DATASET='{dataset}'"])
  model = models.get_model(name, num_classes=10, **registry.model_normalization(dataset))
  layer = model.get_layer("normalize")
  np.testing.assert_allclose(layer.mean, mean, rtol=0, atol=5e-5)
  assert layer.std == pytest.approx(std, abs=5e-5)
  x = np.full((1, 32, 32, 3), 0.5, np.float32)
  np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], (0.5 - np.asarray(mean)) / std,
                             rtol=1e-4)


@pytest.mark.slow
def test_tiny_imagenet_run_exports_its_statistics_and_size(tmp_path):
  """Two steps on the miniature folder: model.keras reloaded takes 64x64 images, has 200
  outputs and TinyImageNet's statistics; model.json carries the class names."""
  root = write_tiny_imagenet(str(tmp_path / "tiny-imagenet-200"), per_class=1)
  cli.parse_gin(["gin/debug.gin"], [
      f"DATASET='tiny_imagenet:{root}'", "train_and_evaluate.num_steps=2", "BATCH_SIZE=8",
      "train_and_evaluate.eval_every=0", "train_and_evaluate.num_validation=0",
      "train_and_evaluate.image_summary_every=0", "Objective.attack_steps=1"])
  loop.train_and_evaluate(str(tmp_path / "run"), tf.distribute.get_strategy())
  model = models.load(str(tmp_path / "run" / "model.keras"))
  assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 200)
  mean, std = _normalize_layer(model)
  np.testing.assert_allclose(mean, models.TINY_IMAGENET_MEAN, rtol=1e-6)
  np.testing.assert_allclose(std, models.TINY_IMAGENET_STD, rtol=1e-6)
  meta = json.loads(open(tmp_path / "run" / "model.json").read())
  assert meta["dataset"] == f"tiny_imagenet:{root}" and meta["class_names"][7] == "thing 7"


# ---------------------------------------------------------------------------------------------
# Mean-shift recalibration data.


def test_recalibration_images_follow_gin():
  x, _ = make_images(10)
  assert recalibration.mean_shift_recalibration("cifar10", x, 0).images(5) is x
  gin.parse_config("mean_shift_recalibration.enabled = False")
  assert recalibration.mean_shift_recalibration("cifar10", x, 0) is None
  gin.clear_config()
  gin.parse_config("mean_shift_recalibration.augment = True\n"
                   "mean_shift_recalibration.batch_size = 512\n"
                   "baseline_augmentation.pad = 3\nbaseline_augmentation.pad_mode = 'edge'")
  rec = recalibration.mean_shift_recalibration("svhn_cropped", x, 0)
  a, b, again = rec.images(1), rec.images(2), rec.images(1)
  assert rec.batch_size == 512 and a.shape == x.shape and a.dtype == np.uint8
  assert not np.array_equal(a, b) and np.array_equal(a, again)  # fresh per step, replayable
  edge = np.pad(x, [(0, 0), (3, 3), (3, 3), (0, 0)], mode="edge")
  for i in range(10):  # SVHN: unmirrored windows of the edge-padded images
    assert any(np.array_equal(a[i], edge[i, dy:dy + 32, dx:dx + 32])
               for dy in range(7) for dx in range(7)), i
