"""The data sets rgd knows by name, one entry each, and the splits training and evaluation use.

A data set is named by one string (gin macro `DATASET`, flag `--dataset`):
  * a registered name: `cifar10`, `cifar100`, `svhn_cropped` (read through tfds);
  * `npz:DIR`: DIR holds `train.npz` and `test.npz`, each with `image` uint8 [N, H, W, 3] and
    `label` int [N] (the layout generated sets use, docs/recipes.md "Generated data").

An entry (`DatasetSpec`) says how to read the data set and what is known about it: number of
classes, image size, which per-channel statistics fit it (a key of `rgd.models.NORMALIZATION`;
the numbers live with the models, which must not import data) and whether a horizontal flip is
a fair augmentation for it. Adding a data set is adding one entry to `DATASETS`.

The last `num_validation` (1024) training images are held out as the validation set (the seed
protocol, docs/recipes.md "Validation").
"""
import dataclasses
import os
from typing import Callable, Optional, Tuple

from rgd.data import sources
from rgd.errors import DataError

NUM_VALIDATION = 1024  # docs/recipes.md "Validation": 1024 held-out training images.
SPLITS = ("train", "validation", "train_full", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One data set.

  `load(split, data_dir, num_classes)` returns the checked (images uint8 [N, H, W, 3], labels
  int64 [N]) of the data set's own split, 'train' or 'test'. `num_classes` and `image_size`
  (H, W) are None where only the files can tell (npz). `normalization` is the key of
  `rgd.models.NORMALIZATION` whose statistics are this data set's, None when rgd has none of
  its own for it. `flip`: whether the baseline augmentation may flip images horizontally.
  """
  name: str
  load: Callable
  num_classes: Optional[int]
  image_size: Optional[Tuple[int, int]]
  normalization: Optional[str]
  flip: bool = True


def _tfds_loader(tfds_name):
  def load(split, data_dir, num_classes):
    images, labels = sources.load_tfds(tfds_name, split, data_dir)
    sources.validate(images, labels, f"tfds:{tfds_name}/{split}", num_classes)
    return images, labels
  return load


def _npz_loader(folder):
  def load(split, data_dir, num_classes):
    del data_dir  # the folder is in the name
    return sources.load_npz(os.path.join(folder, f"{split}.npz"), num_classes)
  return load


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("cifar10", _tfds_loader("cifar10"), 10, (32, 32), "cifar10"),
    DatasetSpec("cifar100", _tfds_loader("cifar100"), 100, (32, 32), "cifar100"),
    # Flipped like CIFAR for now (the baseline flips every data set); rgd.models has no SVHN
    # statistics, so models keep the gin default.
    DatasetSpec("svhn_cropped", _tfds_loader("svhn_cropped"), 10, (32, 32), None),
)}


def get(dataset):
  """The DatasetSpec of `dataset` (a registered name or 'npz:DIR')."""
  if dataset.startswith("npz:"):
    return DatasetSpec(dataset, _npz_loader(dataset[4:]), None, None, None)
  if dataset in DATASETS:
    return DATASETS[dataset]
  raise DataError(f"Unknown dataset {dataset!r}: use one of {sorted(DATASETS)} or 'npz:DIR'")


def num_classes_of(dataset, num_classes=None):
  """`num_classes` if given, else the registry's count, else (npz) max training label + 1."""
  if num_classes:
    return int(num_classes)
  if dataset in DATASETS:
    return DATASETS[dataset].num_classes
  if dataset.startswith("npz:"):
    _, labels = sources.load_npz(os.path.join(dataset[4:], "train.npz"))
    return int(labels.max()) + 1
  raise DataError(f"Unknown number of classes for {dataset!r}: set NUM_CLASSES")


def load_split(dataset, split, num_classes=None, num_validation=NUM_VALIDATION, data_dir=None):
  """Returns (images uint8 [N,H,W,3], labels int64 [N]) of `split`.

  Splits: `train` (without the held-out images), `validation` (the last `num_validation`
  training images), `train_full` and `test`.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}")
  source_split = "test" if split == "test" else "train"
  images, labels = get(dataset).load(source_split, data_dir, num_classes)
  if split in ("train", "validation"):
    if num_validation >= len(images):
      raise DataError(f"{dataset}: cannot hold out {num_validation} of {len(images)} images")
    cut = len(images) - num_validation
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    images, labels = images[sl], labels[sl]
  return images, labels
