"""The data sets rgd knows by name, one entry each, and the splits training and evaluation use.

A data set is named by one string (gin macro `DATASET`, flag `--dataset`):
  * a registered name: `cifar10`, `cifar100`, `svhn_cropped` (read through tfds), `cifar10_1`
    (tfds `cifar10_1/v6`, a test split only: rgd.data.cifar10_1);
  * `npz:DIR`: DIR holds `train.npz` and `test.npz`, each with `image` uint8 [N, H, W, 3] and
    `label` int [N] (the layout generated sets use, docs/recipes.md "Generated data");
  * `tiny_imagenet:DIR`: Stanford's `tiny-imagenet-200` folder (rgd.data.tiny_imagenet; `test`
    is its labelled `val/`), decoded once into a cache beside it;
  * `cifar10_1:DIR`: the CIFAR-10.1 release's `.npy` pair in DIR (test split only).

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

import gin

from rgd.data import cifar10_1, class_names, digits, sources, tiny_imagenet
from rgd.errors import ConfigError, DataError

NUM_VALIDATION = 1024  # docs/recipes.md "Validation": 1024 held-out training images.
SPLITS = ("train", "validation", "train_full", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One data set.

  `load(split, data_dir, num_classes)` returns the checked (images uint8 [N, H, W, 3], labels
  int64 [N]) of the data set's own split, 'train' or 'test'. `num_classes` and `image_size`
  (H, W) are None where only the files can tell (npz). `normalization` is the key of
  `rgd.models.NORMALIZATION` whose statistics are this data set's, None when rgd has none of
  its own for it. `flip`: whether the baseline augmentation may flip images horizontally
  (not for SVHN's digits).
  """
  name: str
  load: Callable
  num_classes: Optional[int]
  image_size: Optional[Tuple[int, int]]
  normalization: Optional[str]
  flip: bool = True
  # `class_names(data_dir)` -> the names in label order, None where rgd cannot know them.
  class_names: Callable = lambda data_dir: None
  # The data set's own splits ('train', 'test'); CIFAR-10.1 has a test split only.
  source_splits: Tuple[str, ...] = ("train", "test")


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


def _tiny_imagenet_loader(folder):
  def load(split, data_dir, num_classes):
    del data_dir  # the folder is in the name; its cache sits beside it
    images, labels = tiny_imagenet.load(folder, split)
    sources.validate(images, labels, folder, num_classes)
    return images, labels
  return load


def _cifar10_1_npy_loader(folder):
  def load(split, data_dir, num_classes):
    del split, data_dir, num_classes  # test only (load_split checks); CIFAR-10's classes
    return cifar10_1.load_npy_pair(folder)
  return load


def _names(names):
  return lambda data_dir: list(names)


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("cifar10", _tfds_loader("cifar10"), 10, (32, 32), "cifar10",
                class_names=_names(class_names.CIFAR10)),
    DatasetSpec("cifar100", _tfds_loader("cifar100"), 100, (32, 32), "cifar100",
                class_names=_names(class_names.CIFAR100)),
    # Digits: a mirrored 2 or 5 is no digit, so the baseline never flips SVHN (DM-Improves-AT
    # trains SVHN without any flip; seed 000 App. B: CutMix "has not been designed for SVHN").
    DatasetSpec("svhn_cropped", _tfds_loader("svhn_cropped"), 10, (32, 32), "svhn", flip=False,
                class_names=_names(class_names.SVHN)),
    # scikit-learn's digits, built in (rgd.data.digits): the offline quick start and study.
    # Flipped like CIFAR (as the committed digits study ran), although a mirrored digit is
    # rarely a digit; bind baseline_augmentation.flip=False to change it.
    DatasetSpec("digits", lambda split, data_dir, num_classes: digits.load(split), 10, (32, 32),
                "digits", class_names=_names([str(d) for d in range(10)])),
    # CIFAR-10.1 v6 (rgd.data.cifar10_1): new test images for CIFAR-10 models.
    DatasetSpec("cifar10_1", _tfds_loader(f"cifar10_1/{cifar10_1.VERSION}"), 10, (32, 32),
                "cifar10", class_names=_names(class_names.CIFAR10), source_splits=("test",)),
)}

# Data sets named by a folder: 'PREFIX:DIR'.
FOLDER_PREFIXES = ("npz:", "tiny_imagenet:", "cifar10_1:")


def _folder_spec(dataset):
  prefix, folder = dataset.split(":", 1)
  if not folder:
    raise DataError(f"{dataset!r}: no folder after '{prefix}:'")
  if prefix == "npz":
    return DatasetSpec(dataset, _npz_loader(folder), None, None, None)
  if prefix == "tiny_imagenet":
    return DatasetSpec(
        dataset, _tiny_imagenet_loader(folder), tiny_imagenet.NUM_CLASSES,
        (tiny_imagenet.IMAGE_SIZE,) * 2, "tiny_imagenet",
        class_names=lambda data_dir: tiny_imagenet.class_names(
            folder, tiny_imagenet.read_wnids(folder)))
  return DatasetSpec(dataset, _cifar10_1_npy_loader(folder), 10, (32, 32), "cifar10",
                     class_names=_names(class_names.CIFAR10), source_splits=("test",))


def get(dataset):
  """The DatasetSpec of `dataset`: a registered name or 'npz:DIR', 'tiny_imagenet:DIR',
  'cifar10_1:DIR'."""
  if dataset in DATASETS:
    return DATASETS[dataset]
  if dataset.startswith(FOLDER_PREFIXES):
    return _folder_spec(dataset)
  raise DataError(f"Unknown dataset {dataset!r}: use one of {sorted(DATASETS)} or "
                  f"{', '.join(repr(p + 'DIR') for p in FOLDER_PREFIXES)}")


def class_names_of(dataset, data_dir=None):
  """The class names of `dataset` in label order (for reports); None where unknown (npz)."""
  return get(dataset).class_names(data_dir)


def model_normalization(dataset):
  """The keyword arguments that give a model built for `dataset` its data set's statistics:
  {'normalization': key} from the registry, or {} (the model's default) when gin binds
  `get_model.normalization` itself or rgd has no statistics for the data set (npz)."""
  try:
    gin.query_parameter("get_model.normalization")
    return {}  # a gin file or binding chose explicitly
  except ValueError:  # not bound
    pass
  key = get(dataset).normalization
  return {"normalization": key} if key else {}


def num_classes_of(dataset, num_classes=None):
  """`num_classes` if given, else the registry's count, else (npz) max training label + 1."""
  if num_classes:
    return int(num_classes)
  spec = get(dataset)
  if spec.num_classes:
    return spec.num_classes
  _, labels = sources.load_npz(os.path.join(dataset[4:], "train.npz"))
  return int(labels.max()) + 1


def load_split(dataset, split, num_classes=None, num_validation=NUM_VALIDATION, data_dir=None):
  """Returns (images uint8 [N,H,W,3], labels int64 [N]) of `split`.

  Splits: `train` (without the held-out images), `validation` (the last `num_validation`
  training images), `train_full` and `test`.
  """
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}")
  source_split = "test" if split == "test" else "train"
  spec = get(dataset)
  if source_split not in spec.source_splits:
    raise DataError(f"{dataset}: no {source_split!r} split (it has {list(spec.source_splits)}: "
                    "an evaluation set)")
  images, labels = spec.load(source_split, data_dir, num_classes)
  if split in ("train", "validation"):
    if num_validation >= len(images):
      raise DataError(f"{dataset}: cannot hold out {num_validation} of {len(images)} images")
    cut = len(images) - num_validation
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    images, labels = images[sl], labels[sl]
  return images, labels
