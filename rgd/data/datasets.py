"""Real data for training and evaluation, by concern:

  registry       the named data sets (one `DatasetSpec` each: loader, classes, image size,
                 statistics, flip), `load_split` with the held-out validation images
  sources        reading npz files and tfds sets (with the offline network probe)
  augmentation   the baseline pad-crop-flip (padding and its mode bound by gin)
  digits         scikit-learn's handwritten digits, built in (no download)
  tiny_imagenet  Stanford's tiny-imagenet-200 folder, decoded once into a cache
  cifar10_1      CIFAR-10.1 from tfds or the release's .npy pair
  class_names    the tfds sets' class names
  pipelines      the tf.data pipelines: `make_train_dataset` (real and generated data mixed per
                 batch), `make_eval_dataset`

This module gathers their public names so that callers can keep one import
(`from rgd.data import datasets; datasets.load_split(...)`).
"""
# pylint: disable=unused-import
from rgd.data.augmentation import PAD
from rgd.data.augmentation import baseline_augmentation
from rgd.data.augmentation import pad_crop_flip
from rgd.data.pipelines import GAUSSIAN
from rgd.data.pipelines import GENERATED_LABEL_SMOOTHING
from rgd.data.pipelines import make_eval_dataset
from rgd.data.pipelines import make_train_dataset
from rgd.data.pipelines import num_real_per_batch
from rgd.data.pipelines import soft_labels
from rgd.data.pipelines import split_counts
from rgd.data.pipelines import to_float
from rgd.data.registry import DATASETS
from rgd.data.registry import NUM_VALIDATION
from rgd.data.registry import DatasetSpec
from rgd.data.registry import class_names_of
from rgd.data.registry import get as spec_of
from rgd.data.registry import load_split
from rgd.data.registry import model_normalization
from rgd.data.registry import num_classes_of
from rgd.data.sources import load_npz
