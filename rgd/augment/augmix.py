"""AugMix (Hendrycks et al. 2020b), stateless, as a batch augmentation and for the JSD term.

For every image, `width` = 3 chains of `depth` ~ U{1, 2, 3} operations each (depth=-1 in the
reference), every operation drawn uniformly from AutoContrast, Equalize, Posterize, Rotate,
Solarize, ShearX/Y, TranslateX/Y with a level ~ U(0.1, severity), severity 3; then

    mix = sum_i w_i chain_i(x),  w ~ Dirichlet(alpha, ..., alpha);
    x_augmix = (1 - m) x + m mix,  m ~ Beta(alpha, alpha),  alpha = 1.

Every number is the CIFAR reference's (google-research/augmix `cifar.py` flags and
`augmentations.py`: `int_parameter(level, maxval) = int(level * maxval / 10)`, rotate 30
degrees, solarize 256, shear 0.3, translate 32/3 px, posterize 4 bits). The ops themselves are
rgd.augment.image_ops' (nearest-neighbour sampling and mid-grey fill where the reference uses
PIL's bilinear resampling and black fill; the op set excludes those that overlap CIFAR-10-C, as
the paper requires). All randomness is stateless from the int32 [2] seed: the same eagerly and
in `tf.data.map`, replayed on resume.

Keras 3's `keras.layers.AugMix` is not used: it draws from a `SeedGenerator` whose state lives in
the layer, so a resumed input pipeline (whose iterator state rgd checkpoints) would not replay it.

`jensen_shannon(logits...)` is the consistency loss of the paper (Eq. 1 of AugMix; weight 12 in
the reference): the mean KL of each prediction to the mixture M, with M clipped to 1e-7.
"""
import gin
import tensorflow as tf

from rgd.augment import common, image_ops
from rgd.errors import ConfigError

AUGMIX_OPS = ("AutoContrast", "Equalize", "Posterize", "Rotate", "Solarize", "ShearX", "ShearY",
              "TranslateX", "TranslateY")


def _fractions(level, width):
  """Each op's `fraction` argument of image_ops for reference level `level` [n] (in (0, 10))."""
  int_param = lambda maxval: tf.floor(level * maxval / 10.)
  translate_px = int_param(width / 3.)
  per_op = {
      "AutoContrast": tf.zeros_like(level), "Equalize": tf.zeros_like(level),
      # ImageOps.posterize(img, 4 - int_param(4)): image_ops keeps 8 - round(4 f) bits.
      "Posterize": (4. + int_param(4.)) / 4.,
      "Rotate": int_param(30.) / image_ops.MAX_ROTATE,
      # ImageOps.solarize(img, 256 - int_param(256)): image_ops inverts at >= 255 (1 - f).
      "Solarize": 1. - (256. - int_param(256.)) / 255.,
      "ShearX": level / 10. * 0.3 / image_ops.MAX_SHEAR,
      "ShearY": level / 10. * 0.3 / image_ops.MAX_SHEAR,
      # Whole pixels; image_ops truncates, so land just above the integer.
      "TranslateX": (translate_px + 1e-3) / (image_ops.MAX_TRANSLATE * width),
      "TranslateY": (translate_px + 1e-3) / (image_ops.MAX_TRANSLATE * width),
  }
  return tf.stack([per_op[name] for name in AUGMIX_OPS])  # [num_ops, n]


@gin.configurable
class AugMix:
  """The AugMix batch augmentation (rgd.augment hook): `op(batch, seed) -> batch`."""

  def __init__(self, severity=3, width=3, depth=-1, alpha=1.0):
    common.check_positive("AugMix", severity, "severity")
    common.check_positive("AugMix", alpha, "alpha")
    if int(width) != width or width < 1:
      raise ConfigError(f"AugMix: width must be a whole number >= 1, got {width}")
    if depth != -1 and (int(depth) != depth or depth < 1):
      raise ConfigError(f"AugMix: depth must be -1 (uniform in 1..3) or >= 1, got {depth}")
    self.severity, self.width, self.depth, self.alpha = float(severity), int(width), int(depth), \
        float(alpha)

  def augment(self, images, seed):
    """AugMix of float images [n, H, W, 3] in [0, 1]."""
    n = tf.shape(images)[0]
    max_depth = 3 if self.depth == -1 else self.depth
    s_w, s_m, s_chains = common.split_seed(seed, 3)
    # Dirichlet(alpha) as normalised Gamma(alpha) draws; Beta(alpha, alpha) likewise.
    gammas = tf.random.stateless_gamma([n, self.width], s_w, alpha=self.alpha)
    weights = gammas / tf.reduce_sum(gammas, axis=1, keepdims=True)
    m = common.sample_beta([n], s_m, self.alpha, self.alpha)
    mix = tf.zeros_like(images)
    for i, s_chain in enumerate(common.split_seed(s_chains, self.width)):
      s_depth, s_ops = common.split_seed(s_chain, 2)
      depth = (common.uniform_int([n], s_depth, 3) + 1 if self.depth == -1
               else tf.fill([n], self.depth))
      chain = images
      for j, s in enumerate(common.split_seed(s_ops, max_depth)):
        s_op, s_level, s_apply = common.split_seed(s, 3)
        op = common.uniform_int([n], s_op, len(AUGMIX_OPS))
        level = tf.random.stateless_uniform([n], s_level, 0.1, self.severity)
        frac = tf.gather(tf.transpose(_fractions(level, float(images.shape[2]))), op,
                         batch_dims=1)
        out = image_ops.apply_per_image(chain, op, frac, s_apply, AUGMIX_OPS)
        chain = tf.where((j < depth)[:, None, None, None], out, chain)
      mix += weights[:, i, None, None, None] * chain
    mixed = (1. - m[:, None, None, None]) * images + m[:, None, None, None] * mix
    return tf.clip_by_value(mixed, 0., 1.)

  def __call__(self, batch, seed):
    common.check_batch("AugMix", batch)
    return dict(batch, image=self.augment(batch["image"], seed))

