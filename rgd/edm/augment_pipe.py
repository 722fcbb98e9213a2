"""EDM's augmentation pipeline (NVlabs/edm `training/augment.py` AugmentPipe) as train.py sets
it for CIFAR-10: p = 0.12 with xflip (multiplier 1e8, so an x-flip with probability 1/2 on every
image), yflip, scale, rotate_frac, aniso and translate_frac (multipliers 1), giving the 9
augmentation labels the network's `map_augment` reads (train.py: `augment_kwargs.update(
xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)`, `augment_dim = 9`).

Images are NHWC in EDM's model range [-1, 1]. Randomness is stateless from an int32 [2] seed (as
rgd.augment), drawn for the global batch and sliced by `rows`, so a resumed run replays it and
the draws do not depend on the number of replicas. Sampling never augments: the sampler passes
no augmentation labels (zeros, rgd.edm.denoiser.make_denoiser).

The geometric part follows augment.py step by step: the inverse transform G_inv (pixel units,
origin at the image centre) is built from the draws; the batch is reflect-padded by the margin
the transformed corners need (one margin for the whole batch, as there); upsampled 2x with the
sym6 wavelet low-pass; resampled bilinearly (grid_sample, zeros outside, align_corners=False);
low-passed, downsampled 2x and cropped. It runs whenever a geometric augmentation is enabled,
even when no image draws one (then it is the identity up to float rounding, as there).
"""
import math

import numpy as np
import tensorflow as tf

from rgd.augment.common import split_seed

P = 0.12                  # train.py --augment default (CIFAR-10)
NUM_LABELS = 9            # train.py: network_kwargs.augment_dim = 9
SCALE_STD = 0.2           # augment.py AugmentPipe defaults: scale_std, rotate_frac_max, ...
ROTATE_FRAC_MAX = 1.0
ANISO_STD = 0.2
ANISO_ROTATE_PROB = 0.5
TRANSLATE_FRAC_STD = 0.125
# augment.py `wavelets['sym6']`: the symlet-6 low-pass filter (PyWavelets' sym6 dec_lo reversed).
SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148],
                np.float32)


def _mat(rows):
  """[N, 3, 3] from 3 rows of 3 entries, each a scalar or an [N] tensor."""
  n = next(tf.shape(e)[0] for r in rows for e in r if isinstance(e, tf.Tensor))
  entries = [tf.broadcast_to(tf.cast(e, tf.float32), [n]) for r in rows for e in r]
  return tf.reshape(tf.stack(entries, axis=-1), [n, 3, 3])


def translate2d(tx, ty):
  return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def scale2d(sx, sy):
  return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def rotate2d(theta):
  return _mat([[tf.cos(theta), -tf.sin(theta), 0], [tf.sin(theta), tf.cos(theta), 0], [0, 0, 1]])


def draw(seed, n, p=P, rows=None):
  """The pipeline's random parameters for `n` images (rows = (start, total): drawn for `total`
  images, these take rows start..start+n). Returns dict of [n] float32 tensors: xflip, yflip
  (0/1), scale, rotate, aniso, aniso_angle, tx, ty -- each 0 where the image does not get it."""
  start, total = (0, n) if rows is None else rows
  s = split_seed(seed, 14)
  u = lambda i: tf.random.stateless_uniform([total], s[i])[start:start + n]
  g = lambda i: tf.random.stateless_normal([total], s[i])[start:start + n]
  coin = lambda i: tf.cast(u(i) < 0.5, tf.float32)    # torch.randint(2)
  on = lambda i, prob: u(i) < prob
  zero = tf.zeros([n])
  translate = tf.random.stateless_normal([2, total], s[12])[:, start:start + n]
  return dict(
      xflip=tf.where(on(1, 1e8 * p), coin(0), zero),   # xflip multiplier 1e8 (train.py)
      yflip=tf.where(on(3, p), coin(2), zero),
      scale=tf.where(on(5, p), g(4), zero),
      rotate=tf.where(on(7, p), (u(6) * 2 - 1) * (math.pi * ROTATE_FRAC_MAX), zero),
      aniso=tf.where(on(9, p), g(8), zero),
      aniso_angle=tf.where(on(11, ANISO_ROTATE_PROB), (u(10) * 2 - 1) * math.pi, zero),
      tx=tf.where(on(13, p), translate[0], zero),   # one coin for both (augment.py)
      ty=tf.where(on(13, p), translate[1], zero))


def labels_of(params):
  """[n, 9] augmentation labels in augment.py's order: xflip, yflip, scale, cos(rot) - 1,
  sin(rot), aniso * cos(angle), aniso * sin(angle), tx, ty (the draws, not pixel amounts)."""
  r, a, t = params["rotate"], params["aniso"], params["aniso_angle"]
  return tf.stack([params["xflip"], params["yflip"], params["scale"], tf.cos(r) - 1, tf.sin(r),
                   a * tf.cos(t), a * tf.sin(t), params["tx"], params["ty"]], axis=1)


def inverse_transform(params, height, width):
  """G_inv [n, 3, 3] in pixel units (augment.py's products, in its order)."""
  s = tf.pow(2., params["scale"] * SCALE_STD)
  g = scale2d(1 / s, 1 / s)                                   # scale2d_inv(s, s)
  g = g @ rotate2d(params["rotate"])                          # rotate2d_inv(-w)
  sa = tf.pow(2., params["aniso"] * ANISO_STD)
  r = params["aniso_angle"]
  g = g @ rotate2d(-r) @ scale2d(1 / sa, sa) @ rotate2d(r)    # rotate2d_inv(r) @ ... (-r)
  return g @ translate2d(-params["tx"] * width * TRANSLATE_FRAC_STD,   # translate2d_inv
                         -params["ty"] * height * TRANSLATE_FRAC_STD)


def _filter_axis(x, taps, axis, stride=1):
  """Depthwise cross-correlation of NHWC `x` with 1-D `taps` along `axis` (1 = H, 2 = W),
  no padding (callers pad)."""
  k = len(taps)
  kernel = np.reshape(taps, [k, 1] if axis == 1 else [1, k])[..., None, None]
  kernel = tf.tile(tf.constant(kernel, tf.float32), [1, 1, x.shape[-1], 1])
  strides = [1, stride, 1, 1] if axis == 1 else [1, 1, stride, 1]
  return tf.nn.depthwise_conv2d(x, kernel, strides, "VALID")


def _zero_pad_axis(x, before, after, axis):
  pads = [[0, 0]] * 4
  pads[axis] = [before, after]
  return tf.pad(x, pads)


def _upsample_axis(x, axis):
  """Zeros between samples (last one dropped), then the reversed sym6 taps, padding 6."""
  z = tf.stack([x, tf.zeros_like(x)], axis=axis + 1)
  shape = tf.shape(x)
  new = tf.tensor_scatter_nd_update(shape, [[axis]], [2 * shape[axis]])
  z = tf.ensure_shape(tf.reshape(z, new), [None, None, None, x.shape[-1]])
  z = z[:, :-1] if axis == 1 else z[:, :, :-1]
  pad = (len(SYM6) + 1) // 2
  return _filter_axis(_zero_pad_axis(z, pad, pad, axis), SYM6[::-1], axis)


def _downsample_axis(x, axis, crop):
  pad = (len(SYM6) - 1) // 2
  y = _filter_axis(_zero_pad_axis(x, pad, pad, axis), SYM6, axis, stride=2)
  return y[:, crop:-crop] if axis == 1 else y[:, :, crop:-crop]


def _grid_sample(images, theta, out_h, out_w):
  """torch grid_sample(affine_grid(theta, size, align_corners=False), bilinear, zeros padding,
  align_corners=False) for NHWC `images` and theta [n, 2, 3] in normalised coordinates."""
  n = tf.shape(images)[0]
  in_h, in_w = tf.shape(images)[1], tf.shape(images)[2]
  ys = (2 * tf.range(out_h, dtype=tf.float32) + 1) / tf.cast(out_h, tf.float32) - 1
  xs = (2 * tf.range(out_w, dtype=tf.float32) + 1) / tf.cast(out_w, tf.float32) - 1
  gy, gx = tf.meshgrid(ys, xs, indexing="ij")
  base = tf.stack([gx, gy, tf.ones_like(gx)], axis=-1)            # [H, W, 3]
  grid = tf.einsum("hwk,nik->nhwi", base, theta)                   # [n, H, W, 2]: (x, y)
  ix = ((grid[..., 0] + 1) * tf.cast(in_w, tf.float32) - 1) / 2
  iy = ((grid[..., 1] + 1) * tf.cast(in_h, tf.float32) - 1) / 2
  x0, y0 = tf.floor(ix), tf.floor(iy)
  batch = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(ix))
  out = 0.
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    xi, yi = x0 + dx, y0 + dy
    w = (1 - tf.abs(ix - xi)) * (1 - tf.abs(iy - yi))
    inside = (xi >= 0) & (xi <= tf.cast(in_w - 1, tf.float32)) & (yi >= 0) & (
        yi <= tf.cast(in_h - 1, tf.float32))
    idx = tf.stack([batch, tf.clip_by_value(tf.cast(yi, tf.int32), 0, in_h - 1),
                    tf.clip_by_value(tf.cast(xi, tf.int32), 0, in_w - 1)], axis=-1)
    vals = tf.gather_nd(images, idx)
    out += vals * tf.where(inside, w, 0.)[..., None]
  return out


def apply_geometric(images, g_inv):
  """Executes G_inv [n, 3, 3] (pixel units, origin at the centre) on NHWC `images` as
  augment.py does: reflect pad by the batch's margin, sym6 2x upsample, bilinear resample,
  sym6 low-pass 2x downsample, crop."""
  h, w = images.shape[1], images.shape[2]
  cx, cy = (w - 1) / 2, (h - 1) / 2
  hz_pad = len(SYM6) // 4
  corners = tf.constant([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], tf.float32)
  cp = g_inv @ corners                                             # [n, 3, 4]
  margin = tf.reshape(tf.transpose(cp[:, :2, :], [1, 0, 2]), [2, -1])   # [xy, n * 4]
  margin = tf.reduce_max(tf.concat([-margin, margin], 0), axis=1)      # x0, y0, x1, y1
  margin = margin + tf.constant([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, tf.float32)
  margin = tf.clip_by_value(margin, 0., tf.constant([w - 1, h - 1] * 2, tf.float32))
  mx0, my0, mx1, my1 = tf.unstack(tf.cast(tf.math.ceil(margin), tf.int32))
  x = tf.pad(images, [[0, 0], [my0, my1], [mx0, mx1], [0, 0]], mode="REFLECT")
  x = tf.ensure_shape(x, [None, None, None, images.shape[-1]])   # the filters need C
  n = tf.shape(images)[0]
  ones = tf.ones([n])
  g = translate2d(tf.cast(mx0 - mx1, tf.float32) / 2 * ones,
                  tf.cast(my0 - my1, tf.float32) / 2 * ones) @ g_inv
  x = _upsample_axis(_upsample_axis(x, 2), 1)
  g = scale2d(2 * ones, 2 * ones) @ g @ scale2d(0.5 * ones, 0.5 * ones)
  g = translate2d(-0.5 * ones, -0.5 * ones) @ g @ translate2d(0.5 * ones, 0.5 * ones)
  out_h, out_w = (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2
  up_h, up_w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
  g = scale2d(2 / up_w * ones, 2 / up_h * ones) @ g @ scale2d(out_w / 2 * ones, out_h / 2 * ones)
  x = _grid_sample(x, g[:, :2, :], out_h, out_w)
  x = _downsample_axis(_downsample_axis(x, 2, hz_pad), 1, hz_pad)
  return tf.reshape(x, tf.shape(images))


def flips(images, params):
  """The pixel-blitting part: x-flip (width), then y-flip (height), where drawn."""
  x = tf.where(params["xflip"][:, None, None, None] > 0, images[:, :, ::-1], images)
  return tf.where(params["yflip"][:, None, None, None] > 0, x[:, ::-1], x)


def augment(images, seed, p=P, rows=None):
  """(augmented images, [n, 9] labels) of NHWC `images` in [-1, 1] (AugmentPipe.__call__)."""
  images = tf.convert_to_tensor(images, tf.float32)
  params = draw(seed, tf.shape(images)[0], p, rows)
  g_inv = inverse_transform(params, images.shape[1], images.shape[2])
  x = apply_geometric(flips(images, params), g_inv)
  return x, labels_of(params)
