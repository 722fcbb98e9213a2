"""Patching augmentations (seed 000 Sec. 6.2's "second cluster"): Cutout, CutMix and RICAP.

Each acts on one replica batch dict (image float32 [b, H, W, C] in [0, 1], label float32 soft
targets [b, K], is_real bool [b]) with a stateless int32 [2] seed, on real and generated examples
alike; partners come from a random permutation of the batch. Boxes and label weights are drawn
per example. The label weight of every source image is exactly the fraction of the output's
pixels it supplies, so the soft targets always sum to one. `is_real` keeps the flag of the image
the output is built on.
"""
import gin
import tensorflow as tf

from rgd.augment import common
from rgd.errors import ConfigError


def box_mask(y0, x0, h, w, height, width):
  """Bool [b, height, width, 1]: True inside box b (rows y0..y0+h-1, columns x0..x0+w-1)."""
  rows = tf.range(height)[None, :, None]
  cols = tf.range(width)[None, None, :]
  inside = ((rows >= y0[:, None, None]) & (rows < (y0 + h)[:, None, None]) &
            (cols >= x0[:, None, None]) & (cols < (x0 + w)[:, None, None]))
  return inside[..., None]


def _place(seed, h, w, height, width, placement):
  """Top-left corners of boxes of size (h, w), and their sizes after clipping.

  'inside': the box lies wholly in the image, so its area is exactly h * w.
  'clip': the centre is uniform over the image and the box is clipped at the border (Yun et al.
  2019 and DeepMind's `_random_box`; DeVries & Taylor's Cutout), which shrinks boxes that touch
  the border.
  """
  sy, sx = common.split_seed(seed, 2)
  b = tf.shape(h)[0]
  if placement == "inside":
    y0 = common.uniform_int([b], sy, height - h + 1)
    x0 = common.uniform_int([b], sx, width - w + 1)
    return y0, x0, h, w
  cy = common.uniform_int([b], sy, height)
  cx = common.uniform_int([b], sx, width)
  y0 = tf.clip_by_value(cy - h // 2, 0, height)
  x0 = tf.clip_by_value(cx - w // 2, 0, width)
  y1 = tf.clip_by_value(cy - h // 2 + h, 0, height)
  x1 = tf.clip_by_value(cx - w // 2 + w, 0, width)
  return y0, x0, y1 - y0, x1 - x0


def sample_boxes(seed, batch_size, height, width, alpha=1.0, window_length=None,
                 placement="inside"):
  """CutMix boxes (y0, x0, h, w), int32 [batch_size] each.

  Without `window_length` the box's area fraction r ~ Beta(alpha, alpha) (Yun et al. 2019;
  seed 000 uses alpha = 1, "the area of this patch is sampled uniformly at random", App. B), with
  the image's aspect ratio: h = round(H sqrt(r)), and w = round(r H W / h) so that h * w is
  within h / 2 pixels of r H W. With `window_length` L the box is L x L (seed 000 Fig. 9c).
  """
  sr, sp = common.split_seed(seed, 2)
  if window_length is None:
    r = common.sample_beta([batch_size], sr, alpha, alpha)
    h = tf.cast(tf.round(height * tf.sqrt(r)), tf.int32)
    w = tf.cast(tf.round(r * (height * width) / tf.cast(tf.maximum(h, 1), tf.float32)), tf.int32)
    w = tf.where(h > 0, tf.minimum(w, width), 0)
  else:
    h = tf.fill([batch_size], min(int(window_length), height))
    w = tf.fill([batch_size], min(int(window_length), width))
  return _place(sp, h, w, height, width, placement)


def _select(mask, inside, outside):
  """`tf.where(mask, inside, outside)` for a [b, H, W, 1] mask, as m * inside + (1 - m) * outside:
  exact for m in {0, 1} and twice as fast on a CPU as a broadcasting `tf.where`."""
  m = tf.cast(mask, outside.dtype)
  return inside * m + outside * (1. - m)


def _check_placement(op, placement):
  if placement not in ("inside", "clip"):
    raise ConfigError(f"{op}: placement must be 'inside' or 'clip', got {placement!r}")
  return placement


@gin.configurable(module="rgd.augment")
class Cutout:
  """Cutout (DeVries & Taylor 2017): a window_length x window_length square, centred anywhere and
  clipped at the border, is filled with `fill_value`. Labels are unchanged.

  18 px is seed 000's best window on CIFAR-10 with and without weight averaging (Fig. 9b). The
  default fill 0.5 is mid-grey: DeVries & Taylor zero the *normalised* image, i.e. fill with
  about the data set mean (0.49, 0.48, 0.45 on CIFAR-10).
  """

  def __init__(self, window_length=18, probability=1.0, fill_value=0.5):
    self.window_length = common.check_window("Cutout", window_length)
    self.probability = common.check_probability("Cutout", probability)
    if not 0. <= float(fill_value) <= 1.:
      raise ConfigError(f"Cutout: fill_value must be in [0, 1] (images are in [0, 1]), got "
                        f"{fill_value}")
    self.fill_value = float(fill_value)

  def __call__(self, batch, seed):
    common.check_batch("Cutout", batch)
    images = batch["image"]
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    s_box, s_apply = common.split_seed(seed, 2)
    size = tf.fill([b], self.window_length)
    y0, x0, h, w = _place(s_box, size, size, height, width, "clip")
    on = common.applied(b, s_apply, self.probability)
    mask = box_mask(y0, x0, h, w, height, width) & on[:, None, None, None]
    return dict(batch, image=_select(mask, tf.cast(self.fill_value, images.dtype), images))


@gin.configurable(module="rgd.augment")
class CutMix:
  """CutMix (Yun et al. 2019): paste a box from a partner image; the label becomes
  (1 - a) y + a y_partner with a the pasted area fraction.

  Seed 000's recipe: box area fraction ~ Beta(1, 1) (alpha = 1), always applied, and weight
  averaging with tau = 0.999 (seed 000 Sec. 6.1, Fig. 8). `window_length` fixes the box size
  instead (seed 000 Fig. 9c). `placement='clip'` reproduces DeepMind's JAX `utils.cutmix` box
  (centre uniform, clipped at the border, so the mean pasted area is below 1/2); the default
  'inside' keeps the whole box in the image so that the pasted area follows Beta(alpha, alpha).
  DeepMind draws one box per batch; here each example has its own box, the same distribution
  per example with less variance per batch.
  """

  def __init__(self, alpha=1.0, window_length=None, probability=1.0, placement="inside"):
    self.alpha = common.check_positive("CutMix", alpha, "alpha")
    self.window_length = (None if window_length is None
                          else common.check_window("CutMix", window_length))
    self.probability = common.check_probability("CutMix", probability)
    self.placement = _check_placement("CutMix", placement)

  def __call__(self, batch, seed):
    common.check_batch("CutMix", batch)
    images, labels = batch["image"], batch["label"]
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    s_box, s_perm, s_apply = common.split_seed(seed, 3)
    y0, x0, h, w = sample_boxes(s_box, b, height, width, self.alpha, self.window_length,
                                self.placement)
    on = common.applied(b, s_apply, self.probability)
    h = tf.where(on, h, 0)
    partner = common.random_permutation(b, s_perm)
    mask = box_mask(y0, x0, h, w, height, width)
    # The label weight is computed from the same integers as the mask: exactly the pasted area.
    pasted = tf.cast(h * w, tf.float32) / float(height * width)
    out = _select(mask, tf.gather(images, partner), images)
    pasted = tf.cast(pasted, labels.dtype)[:, None]
    mixed = (1. - pasted) * labels + pasted * tf.gather(labels, partner)
    return dict(batch, image=out, label=mixed)


@gin.configurable(module="rgd.augment")
class RICAP:
  """RICAP (Takahashi et al. 2018): four crops from four images tile the output; the label is the
  area-weighted mix of their labels.

  The boundary point is (round(H b_h), round(W b_w)) with b ~ Beta(beta, beta), beta = 0.3 the
  paper's CIFAR setting. The top-left tile comes from the image itself, the other three from
  random partners; each crop is taken at a uniform position in its source image.
  """

  def __init__(self, beta=0.3, probability=1.0):
    self.beta = common.check_positive("RICAP", beta, "beta")
    self.probability = common.check_probability("RICAP", probability)

  def __call__(self, batch, seed):
    common.check_batch("RICAP", batch)
    images, labels = batch["image"], batch["label"]
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    seeds = common.split_seed(seed, 7)
    by = tf.cast(tf.round(height * common.sample_beta([b], seeds[0], self.beta, self.beta)),
                 tf.int32)
    bx = tf.cast(tf.round(width * common.sample_beta([b], seeds[1], self.beta, self.beta)),
                 tf.int32)
    on = common.applied(b, seeds[2], self.probability)
    by, bx = tf.where(on, by, height), tf.where(on, bx, width)
    # Tiles k = 0..3: top-left, top-right, bottom-left, bottom-right.
    tile_h = tf.stack([by, by, height - by, height - by], 1)  # [b, 4]
    tile_w = tf.stack([bx, width - bx, bx, width - bx], 1)
    sources = tf.stack([tf.range(b)] + [common.random_permutation(b, s) for s in seeds[3:6]], 1)
    sy, sx = common.split_seed(seeds[6], 2)
    crop_y = common.uniform_int([b, 4], sy, height - tile_h + 1)
    crop_x = common.uniform_int([b, 4], sx, width - tile_w + 1)

    rows = tf.range(height)[None, :, None]  # [1, H, 1]
    cols = tf.range(width)[None, None, :]  # [1, 1, W]
    below = tf.cast(rows >= by[:, None, None], tf.int32)  # [b, H, 1]
    right = tf.cast(cols >= bx[:, None, None], tf.int32)  # [b, 1, W]
    tile = 2 * below + right  # [b, H, W]
    src_row = tf.gather(crop_y, tile, batch_dims=1) + rows - below * by[:, None, None]
    src_col = tf.gather(crop_x, tile, batch_dims=1) + cols - right * bx[:, None, None]
    src_img = tf.gather(sources, tile, batch_dims=1)
    out = tf.gather_nd(images, tf.stack([src_img, src_row, src_col], -1))

    weights = tf.cast(tile_h * tile_w, labels.dtype) / float(height * width)  # [b, 4]
    mixed = tf.einsum("bk,bkc->bc", weights, tf.gather(labels, sources))
    return dict(batch, image=out, label=mixed)
