"""Architectures, selected by name (gin: `get_model.name`).

Names: `wrn-D-W` (pre-activation Wide-ResNet with Swish, e.g. `wrn-28-10`, `wrn-70-16`),
`resnet18`, `preact_resnet18`, `preact_resnet50`, `dm_preact_resnet18`, `dm_preact_resnet34`
(DeepMind's PreAct-ResNet, RobustBench's `DMPreActResNet`), `tiny_cnn` (debug). Every model
takes images in [0, 1], normalises them inside, and returns float32 logits. Certifiable
(rgd/certified/models.py; seed 004 Table 5): `liresnet-LdWw` (GloroNet, e.g. `liresnet-L6W128`;
centres its input itself, `normalization` does not apply), `linf_dist_net-D-W`, `sortnet-D-W`
(`sortnet_dropout-D-W` trains with SortNet's dropout), e.g. `linf_dist_net-6-5120`: these take
`normalization`'s data set as a per-channel mean and one scalar std, as their references do
(rgd.certified.models.scalar_statistics); `lot-S`, `lot-M`, `lot-L` (LOT, LipConvnet-10/20/40
with 32 initial channels and the reference command's residual blocks; the reference's own
CIFAR-10 statistics on every data set, `normalization` does not apply), `lot-D-C` (depth D, a
multiple of 5, C initial channels), `lot_plain-...` (the same without the residual mixing: the
reference's `LipConvNet`), each with `-lln` for last-layer normalisation (the CIFAR-100 head),
e.g. `lot-L-lln`.
"""
import re
import zipfile

import gin
import keras
import tensorflow as tf

from rgd.errors import ConfigError, DataError

from rgd.certified import models as certified_models
from rgd.models.common import Layers
from rgd.models.resnet import dm_preact_resnet, preact_resnet, resnet18
from rgd.models.small import tiny_cnn
from rgd.models.wide_resnet import wide_resnet

# Per-channel statistics (docs/recipes.md "Model").
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# DATASET='digits' (rgd.data.digits): grey, so one value for the three channels; the mean and
# standard deviation of the 1,200 training images' pixels in [0, 1] (tests/test_digits.py
# recomputes them).
DIGITS_MEAN = (0.3051, 0.3051, 0.3051)
DIGITS_STD = (0.3241, 0.3241, 0.3241)

# SVHN: the per-channel mean / std of its 73,257 training images (`train_32x32.mat`), as
# commonly used (e.g. PatrickZH/DeepCore `deepcore/datasets/svhn.py`). DM-Improves-AT's SVHN
# models normalise with 0.5 / 0.5 instead (docs/recipes.md "SVHN").
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
# TinyImageNet: the training set's statistics as Rade & Moosavi's and DM-Improves-AT's
# `core/data/tiny_imagenet.py` (`DATA_DESC`) and SortNet's `dataset.py` (mean) give them.
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2302, 0.2265, 0.2262)

NORMALIZATION = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "svhn": (SVHN_MEAN, SVHN_STD),
    "tiny_imagenet": (TINY_IMAGENET_MEAN, TINY_IMAGENET_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
    "none": (None, None),
}

MODEL_NAMES = ("wrn-D-W", "resnet18", "preact_resnet18", "preact_resnet50", "dm_preact_resnet18",
               "dm_preact_resnet34", "tiny_cnn",
               "liresnet-LdWw", "linf_dist_net-D-W", "sortnet-D-W", "sortnet_dropout-D-W",
               "lot-S|M|L[-lln]", "lot-D-C[-lln]", "lot_plain-S|M|L|D-C[-lln]")


@gin.configurable(denylist=["num_classes", "input_shape"])
def get_model(name=gin.REQUIRED, num_classes=10, input_shape=(32, 32, 3), normalization="cifar10",
              width=None, conv_init="haiku", bn_offset=True, head_init="zeros", fused_bn=True,
              activation=None):
  """Builds the named model. `normalization` picks the per-channel statistics inside the model.

  `conv_init` ('haiku', 'pytorch', 'he_normal'), `bn_offset` and `head_init` ('zeros', 'haiku',
  'pytorch') choose how layers are built (rgd.models.common.Layers); the defaults are DeepMind's
  JAX model zoo's. `fused_bn` builds BN on TF's fused kernel (same variables and numbers as
  Keras' layer, rgd/models/fused_bn.py); False gives `keras.layers.BatchNormalization`.
  `activation` ('swish', 'relu') replaces the default of `wrn-D-W` (swish) and
  `dm_preact_resnet*` (relu), e.g. to match a converted PyTorch checkpoint.
  """
  if normalization not in NORMALIZATION:
    raise ConfigError(f"Unknown normalization {normalization!r}; "
                      f"expected one of {sorted(NORMALIZATION)}")
  mean, std = NORMALIZATION[normalization]
  kw = dict(num_classes=num_classes, input_shape=tuple(input_shape), mean=mean, std=std,
            layers=Layers(conv_init, bn_offset, head_init, fused_bn))
  m = re.fullmatch(r"liresnet-L(\d+)W(\d+)", name)
  if m:
    return certified_models.liresnet(int(m.group(1)), int(m.group(2)), num_classes,
                                     tuple(input_shape))
  m = re.fullmatch(r"(linf_dist_net|sortnet|sortnet_dropout)-(\d+)-(\d+)", name)
  if m:
    depth, width = int(m.group(2)), int(m.group(3))
    lmean, lstd = certified_models.scalar_statistics(normalization, mean, std)
    if m.group(1) == "linf_dist_net":
      return certified_models.linf_dist_net(depth, width, num_classes, tuple(input_shape),
                                            mean=lmean, std=lstd)
    return certified_models.sortnet(depth, width, num_classes, tuple(input_shape),
                                    dropout=m.group(1) == "sortnet_dropout", mean=lmean, std=lstd)
  m = re.fullmatch(r"(lot|lot_plain)-(?:([SML])|(\d+)-(\d+))(-lln)?", name)
  if m:
    depth = certified_models.LOT_SIZES[m.group(2)] if m.group(2) else int(m.group(3))
    channels = 32 if m.group(2) else int(m.group(4))
    return certified_models.lipconvnet(depth, num_classes, tuple(input_shape), channels,
                                       residual=m.group(1) == "lot", lln=bool(m.group(5)),
                                       name=name)
  m = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
  if m:
    return wide_resnet(int(m.group(1)), int(m.group(2)), activation=activation or "swish", **kw)
  if name == "resnet18":
    return resnet18(**kw)
  if name in ("preact_resnet18", "preact_resnet50"):
    return preact_resnet(int(name[-2:]), **kw)
  if name in ("dm_preact_resnet18", "dm_preact_resnet34"):
    return dm_preact_resnet(int(name[-2:]), activation=activation or "relu", **kw)
  if name == "tiny_cnn":
    return tiny_cnn(width or 32, **kw)
  raise ConfigError(f"Unknown model {name!r}; expected one of {MODEL_NAMES}")


def load(path):
  """The one loader of model files: `keras.saving.load_model(path, compile=False)` with rgd's
  custom layers registered (fused BatchNorm, the certified layers: importing this package
  registers them, which a bare `keras.saving.load_model` in a module that never imported
  rgd.models would miss). A missing file is a ConfigError naming it; one Keras cannot read
  (truncated, corrupt, another format) a DataError naming it and why: Keras itself reports a
  truncated `.keras` file as "File not found"."""
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"model file {path} is missing")
  try:
    return keras.saving.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except  any failure to read the user's file
    raise DataError(f"model file {path} is unreadable: {_why_unreadable(path, e)}") from e


def _why_unreadable(path, error):
  if path.endswith(".keras"):  # a .keras file is a zip archive; a truncated one has no directory
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        zipfile.ZipFile(f).close()
    except (zipfile.BadZipFile, OSError, EOFError):
      return "not a complete .keras (zip) archive: truncated or corrupt"
  elif not path.endswith(".h5"):
    return "not a .keras (or legacy .h5) Keras model file"
  first = str(error).strip().splitlines()
  return f"{type(error).__name__}: {first[0] if first else ''}"
