"""Learned augmentation policies: AutoAugment (CIFAR-10 policy) and RandAugment.

Seed 000 (Sec. 6.2, Fig. 6) finds that both raise clean accuracy but lower robust accuracy:
they were tuned for standard training. They are here to reproduce that comparison. Both run per
image, vectorised over the batch (`image_ops.apply_per_image`), after pad-crop-flip as in the
reference pipelines; labels are unchanged.
"""
import gin
import tensorflow as tf

from rgd.augment import common
from rgd.augment import image_ops
from rgd.errors import ConfigError

# The AutoAugment policy found on reduced CIFAR-10 (Cubuk et al. 2019, appendix of the arXiv
# version), as torchvision lists it: 25 sub-policies of two (op, probability, magnitude level in
# 0..9) steps; ops without a strength have level None.
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
AUTOAUGMENT_LEVELS = 10  # magnitudes are discretised into 10 levels, 0..9 (Cubuk et al. 2019)

# RandAugment's op set (Cubuk et al. 2020, Sec. 3, as in torchvision): 14 ops, drawn uniformly.
RANDAUGMENT_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
                   "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
                   "AutoContrast", "Equalize")


@gin.configurable(module="rgd.augment")
class AutoAugment:
  """AutoAugment with the CIFAR-10 policy: each image draws one of the 25 sub-policies and applies
  its two steps in turn, each with its probability."""

  def __init__(self):
    names = sorted({step[0] for sub in CIFAR10_POLICY for step in sub} | {"Identity"})
    self.op_names = tuple(names)
    index = {n: i for i, n in enumerate(names)}
    self._ops = [[index[s[0]] for s in sub] for sub in CIFAR10_POLICY]
    self._probs = [[s[1] for s in sub] for sub in CIFAR10_POLICY]
    self._fractions = [[(s[2] or 0) / (AUTOAUGMENT_LEVELS - 1) for s in sub]
                       for sub in CIFAR10_POLICY]
    self._identity = index["Identity"]

  def __call__(self, batch, seed):
    common.check_batch("AutoAugment", batch)
    images = batch["image"]
    b = tf.shape(images)[0]
    seeds = common.split_seed(seed, 5)
    sub = common.uniform_int([b], seeds[0], len(CIFAR10_POLICY))
    for step in range(2):
      op = tf.gather(tf.constant([o[step] for o in self._ops]), sub)
      prob = tf.gather(tf.constant([p[step] for p in self._probs]), sub)
      frac = tf.gather(tf.constant([f[step] for f in self._fractions]), sub)
      on = tf.random.stateless_uniform([b], seeds[1 + 2 * step]) < prob
      op = tf.where(on, op, self._identity)
      images = image_ops.apply_per_image(images, op, frac, seeds[2 + 2 * step], self.op_names)
    return dict(batch, image=images)


@gin.configurable(module="rgd.augment")
class RandAugment:
  """RandAugment (Cubuk et al. 2020): `num_ops` ops drawn uniformly (with replacement) per image,
  all at strength `magnitude` / (`num_magnitude_bins` - 1), each with a random direction.

  The defaults N = 2, M = 9 of 31 bins are torchvision's, so that runs compare with the PyTorch
  reference; seed 000 does not state the (N, M) of its Fig. 6.
  """

  def __init__(self, num_ops=2, magnitude=9, num_magnitude_bins=31):
    if isinstance(num_ops, bool) or int(num_ops) != num_ops or num_ops < 0:
      raise ConfigError(f"RandAugment: num_ops must be a whole number >= 0, got {num_ops}")
    if int(num_magnitude_bins) != num_magnitude_bins or num_magnitude_bins < 2:
      raise ConfigError(f"RandAugment: num_magnitude_bins must be a whole number >= 2, got "
                        f"{num_magnitude_bins}")
    if not 0 <= magnitude <= num_magnitude_bins - 1:
      raise ConfigError(f"RandAugment: magnitude must be in [0, {num_magnitude_bins - 1}] "
                        f"(num_magnitude_bins - 1), got {magnitude}")
    self.num_ops = int(num_ops)
    self.fraction = float(magnitude) / (num_magnitude_bins - 1)
    self.op_names = RANDAUGMENT_OPS

  def __call__(self, batch, seed):
    common.check_batch("RandAugment", batch)
    images = batch["image"]
    b = tf.shape(images)[0]
    frac = tf.fill([b], self.fraction)
    for s in common.split_seed(seed, max(self.num_ops, 1))[:self.num_ops]:
      s_op, s_apply = common.split_seed(s, 2)
      op = common.uniform_int([b], s_op, len(self.op_names))
      images = image_ops.apply_per_image(images, op, frac, s_apply, self.op_names)
    return dict(batch, image=images)
