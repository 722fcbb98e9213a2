"""The images an l_inf-dist Net / SortNet re-estimates its mean shifts on before validation and
export (rgd.certified.linf_dist.recalibrate), bound per gin file:

  * SortNet (zbh2047/SortNet `main.py` `update_bn`): before every test, one pass over the
    *training loader*, i.e. the training images augmented as in training (random crop, flip),
    at the training batch size (512): `augment=True`, `batch_size=512`;
  * L_inf-dist-net-v2 `main.py` does not recalibrate: the running means tracked in training
    are certified as they are: `enabled=False`;
  * rgd's default (kept for the recipes that never named one): the unaugmented training images
    at the evaluation batch size.

Augmented copies are drawn afresh for every recalibration (the reference's loader reshuffles and
re-augments each epoch), keyed by the step so that a resumed run draws the same ones.
"""
import gin
import numpy as np
import tensorflow as tf

from rgd.data import augmentation, registry
from rgd.runtime import seeds
from rgd.errors import ConfigError

_CHUNK = 4096  # images augmented per call: bounds the host memory of the gather


class Recalibration:
  """`images(step)` -> the uint8 images to recalibrate on; `batch_size` (None: the caller's)."""

  def __init__(self, images, seed, crop, augment, batch_size):
    self._images, self._seed, self._crop = images, int(seed), crop
    self.augment, self.batch_size = bool(augment), batch_size

  def images(self, step):
    if not self.augment:
      return self._images
    out = []
    for k, start in enumerate(range(0, len(self._images), _CHUNK)):
      chunk = tf.constant(self._images[start:start + _CHUNK])
      key = seeds.key(self._seed, "recalibration", int(step), sub=k)
      out.append(augmentation.pad_crop_flip(chunk, key, **self._crop).numpy())
    return np.concatenate(out)


@gin.configurable(module="rgd.data", denylist=["dataset", "images", "seed"])
def mean_shift_recalibration(dataset, images, seed, enabled=True, augment=False,
                             batch_size=None):
  """The Recalibration of a run on `dataset` with training `images`, or None (`enabled=False`).
  `augment` uses the run's own baseline augmentation (crop padding and flip as gin binds
  `baseline_augmentation`)."""
  if not enabled:
    return None
  if batch_size is not None and int(batch_size) <= 0:
    raise ConfigError(f"mean_shift_recalibration.batch_size={batch_size!r} must be positive")
  crop = augmentation.baseline_augmentation(dataset_flip=registry.get(dataset).flip)
  return Recalibration(images, seed, crop, augment, None if batch_size is None
                       else int(batch_size))
