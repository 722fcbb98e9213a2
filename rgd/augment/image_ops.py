"""Per-image photometric and geometric ops of AutoAugment/RandAugment, vectorised over a batch.

Every op has the signature `op(images, fraction, sign) -> images`: `images` float32
[n, H, W, 3] in [0, 1]; `fraction` float32 [n], the strength of each image's op as a fraction of
the op's maximum; `sign` float32 [n] of +-1 for the ops whose direction is random. The maximum
strengths are those of AutoAugment (Cubuk et al. 2019, Table 6 of the arXiv version), scaled as
torchvision's `_augmentation_space` does, so a policy here matches the PyTorch reference:

  ShearX/Y        0.3 (shear factor)        Rotate        30 degrees
  TranslateX/Y    150/331 of the image      Posterize     8 -> 4 bits
  Brightness, Color, Contrast, Sharpness    factor 1 +- 0.9
  Solarize        threshold 255 -> 0        AutoContrast, Equalize, Invert: no strength

Ops defined on 8-bit images (Posterize, Solarize, Equalize) quantise to 256 levels first; images
that came from uint8 / 255 round-trip exactly. Geometric ops fill with mid-grey (128 / 255, as
the TF AutoAugment reference) and use nearest-neighbour sampling (torchvision's default).
"""
import math

import tensorflow as tf

FILL_VALUE = 128. / 255.  # TF models' AutoAugment `replace` value.
MAX_SHEAR = 0.3
MAX_TRANSLATE = 150. / 331.  # 150 px on AutoAugment's 331-px images, as a fraction of the size
MAX_ROTATE = 30.  # degrees
MAX_ENHANCE = 0.9  # factor 1 +- 0.9, i.e. in [0.1, 1.9]


def _affine(images, transforms):
  """Samples output pixel (x, y) from input (a0 x + a1 y + a2, b0 x + b1 y + b2); `transforms`
  [n, 6]. Nearest neighbour, constant grey fill."""
  n = tf.shape(images)[0]
  transforms = tf.concat([transforms, tf.zeros([n, 2], tf.float32)], 1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
      fill_value=FILL_VALUE, interpolation="NEAREST", fill_mode="CONSTANT")


def _stack_columns(*columns):
  return tf.stack([tf.broadcast_to(tf.cast(c, tf.float32), tf.shape(columns[0]))
                   for c in columns], axis=1)


def identity(images, fraction, sign):
  del fraction, sign
  return images


def shear_x(images, fraction, sign):
  # PIL's affine (1, s, 0, 0, 1, 0) about the top-left corner, as the AutoAugment reference.
  # PIL maps pixel centres (x + 1/2, y + 1/2); the s / 2 offset makes nearest-neighbour rounding
  # pick the same pixels.
  s = sign * fraction * MAX_SHEAR
  return _affine(images, _stack_columns(tf.ones_like(s), s, s / 2., 0., 1., 0.))


def shear_y(images, fraction, sign):
  s = sign * fraction * MAX_SHEAR
  return _affine(images, _stack_columns(tf.ones_like(s), 0., 0., s, 1., s / 2.))


def _trunc(x):
  return tf.sign(x) * tf.floor(tf.abs(x))


def translate_x(images, fraction, sign):
  # Whole pixels, truncated towards zero like torchvision's int(magnitude).
  t = _trunc(sign * fraction * MAX_TRANSLATE * tf.cast(tf.shape(images)[2], tf.float32))
  return _affine(images, _stack_columns(tf.ones_like(t), 0., t, 0., 1., 0.))


def translate_y(images, fraction, sign):
  t = _trunc(sign * fraction * MAX_TRANSLATE * tf.cast(tf.shape(images)[1], tf.float32))
  return _affine(images, _stack_columns(tf.ones_like(t), 0., 0., 0., 1., t))


def rotate(images, fraction, sign):
  """Rotation about the image centre by sign * fraction * 30 degrees."""
  theta = sign * fraction * (MAX_ROTATE * math.pi / 180.)
  h = tf.cast(tf.shape(images)[1], tf.float32)
  w = tf.cast(tf.shape(images)[2], tf.float32)
  cy, cx = (h - 1.) / 2., (w - 1.) / 2.
  c, s = tf.cos(theta), tf.sin(theta)
  # Input point = R(theta) (output point - centre) + centre, in (x, y) with y pointing down.
  return _affine(images, _stack_columns(c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy))


def _blend(degenerate, images, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped to [0, 1]."""
  factor = factor[:, None, None, None]
  return tf.clip_by_value(degenerate + factor * (images - degenerate), 0., 1.)


def _enhance_factor(fraction, sign):
  return 1. + sign * fraction * MAX_ENHANCE


def _grayscale(images):
  # ITU-R 601-2 luma, PIL's "L" conversion.
  return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)


def brightness(images, fraction, sign):
  return _blend(tf.zeros_like(images), images, _enhance_factor(fraction, sign))


def color(images, fraction, sign):
  return _blend(_grayscale(images), images, _enhance_factor(fraction, sign))


def contrast(images, fraction, sign):
  mean = tf.reduce_mean(_grayscale(images), axis=[1, 2, 3], keepdims=True)
  return _blend(mean, images, _enhance_factor(fraction, sign))


def sharpness(images, fraction, sign):
  """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), borders untouched."""
  # The 3x3 filter as a sum of shifted slices, not depthwise_conv2d: TF's oneDNN depthwise
  # kernel (on by default in rgd, rgd/__init__.py) returns the wrong shape for an empty batch,
  # which apply_per_image produces when no image draws this op.
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  smooth = tf.add_n([images[:, i:h - 2 + i, j:w - 2 + j, :] for i in range(3)
                     for j in range(3) if (i, j) != (1, 1)])
  smooth = (smooth + 5. * images[:, 1:h - 1, 1:w - 1, :]) / 13.
  interior = tf.pad(tf.ones_like(smooth[..., :1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
  smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior > 0, smooth, images)
  return _blend(degenerate, images, _enhance_factor(fraction, sign))


def _to_uint8_levels(images):
  return tf.cast(tf.round(tf.clip_by_value(images, 0., 1.) * 255.), tf.int32)


def posterize(images, fraction, sign):
  """Keeps the top 8 - round(4 * fraction) bits of each 8-bit channel."""
  del sign
  bits = 8 - tf.cast(tf.round(4. * fraction), tf.int32)
  mask = 256 - tf.bitwise.left_shift(1, 8 - bits)
  return tf.cast(tf.bitwise.bitwise_and(_to_uint8_levels(images), mask[:, None, None, None]),
                 tf.float32) / 255.


def solarize(images, fraction, sign):
  """Inverts the 8-bit values at or above the threshold 255 * (1 - fraction)."""
  del sign
  threshold = (255. * (1. - fraction))[:, None, None, None]
  return tf.where(tf.cast(_to_uint8_levels(images), tf.float32) >= threshold, 1. - images, images)


def auto_contrast(images, fraction, sign):
  """Stretches each channel of each image to [0, 1]; a constant channel is left unchanged."""
  del fraction, sign
  lo = tf.reduce_min(images, axis=[1, 2], keepdims=True)
  hi = tf.reduce_max(images, axis=[1, 2], keepdims=True)
  scaled = (images - lo) / tf.where(hi > lo, hi - lo, 1.)
  return tf.where(hi > lo, scaled, images)


def equalize(images, fraction, sign):
  """PIL's ImageOps.equalize, per channel of each image, on 8-bit levels."""
  del fraction, sign
  n = tf.shape(images)[0]
  levels = tf.transpose(_to_uint8_levels(images), [0, 3, 1, 2])  # [n, 3, H, W]
  offsets = tf.reshape(tf.range(n * 3) * 256, [n, 3, 1, 1])
  hist = tf.math.bincount(tf.reshape(levels + offsets, [-1]), minlength=n * 3 * 256,
                          maxlength=n * 3 * 256)
  hist = tf.reshape(hist, [n, 3, 256])
  # PIL: step = (number of pixels - count of the last non-empty level) // 255.
  last = 255 - tf.argmax(tf.reverse(tf.cast(hist > 0, tf.int32), [2]), axis=2, output_type=tf.int32)
  last_count = tf.gather(hist, last, axis=2, batch_dims=2)
  step = (tf.reduce_sum(hist, 2) - last_count) // 255  # [n, 3]
  safe_step = tf.maximum(step, 1)[..., None]
  lut = tf.minimum((tf.cumsum(hist, axis=2, exclusive=True) + safe_step // 2) // safe_step, 255)
  flat = tf.reshape(levels, [n, 3, -1])
  mapped = tf.reshape(tf.gather(lut, flat, axis=2, batch_dims=2), tf.shape(levels))
  mapped = tf.where((step > 0)[..., None, None], mapped, levels)
  return tf.transpose(tf.cast(mapped, tf.float32) / 255., [0, 2, 3, 1])


def invert(images, fraction, sign):
  del fraction, sign
  return 1. - images


# Name -> (op, whether the direction is random). Names follow the AutoAugment paper.
OPS = {
    "Identity": (identity, False),
    "ShearX": (shear_x, True),
    "ShearY": (shear_y, True),
    "TranslateX": (translate_x, True),
    "TranslateY": (translate_y, True),
    "Rotate": (rotate, True),
    "Brightness": (brightness, True),
    "Color": (color, True),
    "Contrast": (contrast, True),
    "Sharpness": (sharpness, True),
    "Posterize": (posterize, False),
    "Solarize": (solarize, False),
    "AutoContrast": (auto_contrast, False),
    "Equalize": (equalize, False),
    "Invert": (invert, False),
}


def apply_per_image(images, op_index, fraction, seed, op_names):
  """Applies op `op_names[op_index[i]]` with strength `fraction[i]` to image i.

  The batch is partitioned by op, each op runs once on its share, and the results are stitched
  back: the cost is one op per image, not every op on every image (a `tf.switch_case` per image
  in `tf.map_fn` is several times slower on a CPU host).
  """
  n = tf.shape(images)[0]
  signs = tf.where(tf.random.stateless_uniform([n], seed) < 0.5, -1., 1.)
  parts = tf.dynamic_partition(images, op_index, len(op_names))
  fractions = tf.dynamic_partition(fraction, op_index, len(op_names))
  sign_parts = tf.dynamic_partition(signs, op_index, len(op_names))
  positions = tf.dynamic_partition(tf.range(n), op_index, len(op_names))
  outputs = []
  for name, x, f, s in zip(op_names, parts, fractions, sign_parts):
    op, signed = OPS[name]
    outputs.append(op(x, f, s if signed else tf.ones_like(s)))
  out = tf.dynamic_stitch(positions, outputs)
  return tf.ensure_shape(out, images.shape)
