"""The baseline augmentation every training batch gets: pad-crop and a horizontal flip.

Run on whole batches: one vectorised gather is far faster than a per-image map. The batch
augmentations that may follow it (CutMix, AutoAugment, ...) are rgd.augment's.

What varies between recipes is bound per gin file through `baseline_augmentation`: the padding
(4 pixels of zeros in the TRADES recipes, He et al. 2016 and all seeds; 3 pixels repeating the
edge in the certified references' `RandomCrop(32, padding=3, padding_mode='edge')`, zbh2047's
SortNet and L_inf-dist-net-v2 `dataset.py`) and the flip (the data set's `DatasetSpec.flip`
unless set: SVHN's digits are never mirrored).
"""
import gin
import tensorflow as tf

from rgd.errors import ConfigError

PAD = 4  # Pad-4-crop (He et al. 2016; all seeds).
PAD_MODES = ("constant", "edge", "reflect")


@gin.configurable(module="rgd.data")
def baseline_augmentation(pad=PAD, pad_mode="constant", flip=None, dataset_flip=True):
  """The gin-bound settings of `pad_crop_flip`: dict(pad, pad_mode, flip). `flip=None` takes
  the data set's own (`dataset_flip`, the registry's DatasetSpec.flip)."""
  if pad_mode not in PAD_MODES:
    raise ConfigError(f"baseline_augmentation.pad_mode={pad_mode!r}: expected one of "
                      f"{PAD_MODES}")
  if int(pad) != pad or pad < 0:
    raise ConfigError(f"baseline_augmentation.pad={pad!r}: expected an integer >= 0")
  return dict(pad=int(pad), pad_mode=pad_mode, flip=bool(dataset_flip if flip is None else flip))


def _source_index(index, size, pad, mode):
  """Index into the unpadded axis of length `size` for positions `index` of the axis padded by
  `pad` on both sides: 'edge' repeats the border pixel, 'reflect' mirrors without repeating it
  (numpy's and torchvision's 'reflect')."""
  i = index - pad
  if mode == "edge":
    return tf.clip_by_value(i, 0, size - 1)
  period = 2 * (size - 1)
  i = tf.math.floormod(i, period) if period else tf.zeros_like(i)
  return tf.where(i >= size, period - i, i)


def pad_crop_flip(images, seed, pad=PAD, flip=True, pad_mode="constant"):
  """Random crop after padding by `pad` (`pad_mode` 'constant' (zeros), 'edge' or 'reflect'),
  and (if `flip`) a random horizontal flip, per example.

  `images` [b, H, W, C] (any dtype); `seed` int32 [2]. Stateless, so a resumed input pipeline
  replays the same augmentation. The crop offsets depend neither on `flip` nor on `pad_mode`:
  a data set that must not be mirrored (digits, SVHN) gets the same crops with flip=False.
  """
  if pad_mode not in PAD_MODES:
    raise ConfigError(f"pad_mode={pad_mode!r}: expected one of {PAD_MODES}")
  if pad_mode == "reflect" and pad >= min(images.shape[1], images.shape[2]):
    raise ConfigError(f"reflect padding {pad} needs images larger than {pad} pixels")
  b = tf.shape(images)[0]
  h, w = images.shape[1], images.shape[2]
  keys = tf.random.experimental.stateless_split(seed, 3)
  dy = tf.random.stateless_uniform([b], keys[0], 0, 2 * pad + 1, dtype=tf.int32)
  dx = tf.random.stateless_uniform([b], keys[1], 0, 2 * pad + 1, dtype=tf.int32)
  rows = dy[:, None] + tf.range(h)[None]
  cols = dx[:, None] + tf.range(w)[None]
  if flip:
    flipped = tf.random.stateless_uniform([b], keys[2]) < 0.5
    cols = tf.where(flipped[:, None], tf.reverse(cols, [1]), cols)
  if pad_mode == "constant":
    source = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  else:  # gather straight from the unpadded images: padded position -> source pixel
    source = images
    rows = _source_index(rows, h, pad, pad_mode)
    cols = _source_index(cols, w, pad, pad_mode)
  out = tf.gather(source, rows, axis=1, batch_dims=1)
  return tf.gather(out, cols, axis=2, batch_dims=1)
