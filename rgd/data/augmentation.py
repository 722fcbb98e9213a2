"""The baseline augmentation every training batch gets: pad-4-crop and a horizontal flip.

Run on whole batches: one vectorised gather is far faster than a per-image map. The batch
augmentations that may follow it (CutMix, AutoAugment, ...) are rgd.augment's.
"""
import tensorflow as tf

PAD = 4  # Pad-4-crop (He et al. 2016; all seeds).


def pad_crop_flip(images, seed, pad=PAD, flip=True):
  """Random crop after zero padding by `pad`, and (if `flip`) a random horizontal flip, per
  example.

  `images` [b, H, W, C] (any dtype); `seed` int32 [2]. Stateless, so a resumed input pipeline
  replays the same augmentation. The crop offsets do not depend on `flip`: a data set that must
  not be mirrored (digits, SVHN) gets the same crops with flip=False.
  """
  b = tf.shape(images)[0]
  h, w = images.shape[1], images.shape[2]
  keys = tf.random.experimental.stateless_split(seed, 3)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  dy = tf.random.stateless_uniform([b], keys[0], 0, 2 * pad + 1, dtype=tf.int32)
  dx = tf.random.stateless_uniform([b], keys[1], 0, 2 * pad + 1, dtype=tf.int32)
  rows = dy[:, None] + tf.range(h)[None]
  cols = dx[:, None] + tf.range(w)[None]
  if flip:
    flipped = tf.random.stateless_uniform([b], keys[2]) < 0.5
    cols = tf.where(flipped[:, None], tf.reverse(cols, [1]), cols)
  out = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(out, cols, axis=2, batch_dims=1)
