"""A DDPM++-style U-Net (Song et al. 2021, as NVlabs/edm `training/networks.py` SongUNet).

F([x, c_noise, labels]) -> same shape as x. As SongUNet with the DDPM++ settings of EDM's
`train.py --arch=ddpmpp`: positional noise embedding, embedding MLP, label embedding added to
the noise embedding (with optional label dropout for classifier-free guidance), residual blocks
(GroupNorm, SiLU, 3x3 conv, scale-shift by the embedding, dropout, skip scaled by 1/sqrt(2)),
self-attention at 16x16. Sizes come from gin via `edm_unet`:

  EDM CIFAR-10 (DDPM++): model_channels=128, channel_mult=(2, 2, 2), num_blocks=4,
  attn_resolutions=(16,), dropout=0.13 -> ~56M parameters (EDM Table 7 / train.py).

Departures: down/upsampling by strided conv / nearest resize + conv instead of SongUNet's FIR
resample; no encoder-skip "residual" input paths; attention with Keras MultiHeadAttention.
"""
import math

import gin
import keras
import tensorflow as tf


def positional_embedding(c_noise, dim, max_positions=10000):
  """SongUNet PositionalEmbedding (endpoint=True): [cos, sin] of c_noise * frequencies."""
  half = dim // 2
  freqs = tf.range(half, dtype=tf.float32) / float(half - 1)
  freqs = (1.0 / max_positions) ** freqs
  x = tf.cast(c_noise, tf.float32)[:, None] * freqs[None, :]
  return tf.concat([tf.cos(x), tf.sin(x)], axis=1)


def _groups(ch):
  return min(32, ch // 4) if ch >= 4 else 1


class EmbeddingLayer(keras.layers.Layer):
  def __init__(self, dim, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim

  def call(self, c_noise):
    return tf.cast(positional_embedding(c_noise, self.dim), self.compute_dtype)


class LabelDropout(keras.layers.Layer):
  """Zeroes the whole label of an example with probability `rate` in training (CFG, Ho 2022)."""
  def __init__(self, rate, **kwargs):
    super().__init__(**kwargs)
    self.rate = rate
    self.seed = keras.random.SeedGenerator(0)

  def call(self, labels, training=False):
    if not training or not self.rate:
      return labels
    keep = keras.random.uniform([tf.shape(labels)[0], 1], seed=self.seed) >= self.rate
    return labels * tf.cast(keep, labels.dtype)


def _res_block(x, emb, out_ch, dropout, attention, name):
  in_ch = x.shape[-1]
  h = keras.layers.GroupNormalization(_groups(in_ch), epsilon=1e-6, name=name + "_gn0")(x)
  h = keras.layers.Activation("silu")(h)
  h = keras.layers.Conv2D(out_ch, 3, padding="same", name=name + "_conv0")(h)
  # Adaptive scale-shift (SongUNet UNetBlock with adaptive_scale=True).
  params = keras.layers.Dense(2 * out_ch, name=name + "_affine")(emb)
  scale, shift = keras.layers.Lambda(lambda p: tf.split(p[:, None, None, :], 2, axis=-1))(params)
  h = keras.layers.GroupNormalization(_groups(out_ch), epsilon=1e-6, name=name + "_gn1")(h)
  h = keras.layers.Lambda(lambda a: a[0] * (a[1] + 1) + a[2])([h, scale, shift])
  h = keras.layers.Activation("silu")(h)
  h = keras.layers.Dropout(dropout)(h)
  h = keras.layers.Conv2D(out_ch, 3, padding="same", name=name + "_conv1")(h)
  skip = x if in_ch == out_ch else keras.layers.Conv2D(out_ch, 1, name=name + "_skip")(x)
  x = keras.layers.Lambda(lambda a: (a[0] + a[1]) / math.sqrt(2))([h, skip])  # skip_scale
  if attention:
    a = keras.layers.GroupNormalization(_groups(out_ch), epsilon=1e-6, name=name + "_gn2")(x)
    size = a.shape[1] * a.shape[2]
    seq = keras.layers.Reshape((size, out_ch))(a)
    seq = keras.layers.MultiHeadAttention(1, out_ch, name=name + "_attn")(seq, seq)
    a = keras.layers.Reshape(tuple(x.shape[1:]))(seq)
    x = keras.layers.Lambda(lambda a: (a[0] + a[1]) / math.sqrt(2))([x, a])
  return x


@gin.configurable
def edm_unet(image_shape=(32, 32, 3), num_classes=10, model_channels=128,
             channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.10,
             label_dropout=0.0, name="edm_unet"):
  """Builds F. Defaults are EDM's CIFAR-10 DDPM++ (train.py: cres=[2,2,2], dropout 0.13)."""
  x_in = keras.Input(image_shape, name="x")
  noise_in = keras.Input((), name="c_noise")
  labels_in = keras.Input((num_classes,), name="labels")
  emb_ch = model_channels * 4   # SongUNet channel_mult_emb=4
  emb = EmbeddingLayer(model_channels)(noise_in)
  # SongUNet swaps cos/sin halves ("flip_sin_to_cos"); equivalent up to a permutation.
  if num_classes:
    labels = LabelDropout(label_dropout)(labels_in)
    lab = keras.layers.Dense(model_channels, use_bias=False, name="map_label")(labels)
    emb = keras.layers.Add()([emb, lab])
  emb = keras.layers.Dense(emb_ch, activation="silu", name="map_layer0")(emb)
  emb = keras.layers.Dense(emb_ch, activation="silu", name="map_layer1")(emb)

  h = keras.layers.Conv2D(model_channels, 3, padding="same", name="enc_in")(x_in)
  skips = [h]
  for level, mult in enumerate(channel_mult):
    if level > 0:
      h = keras.layers.Conv2D(h.shape[-1], 3, strides=2, padding="same",
                              name=f"down{level}")(h)
      skips.append(h)
    for b in range(num_blocks):
      h = _res_block(h, emb, model_channels * mult, dropout, h.shape[1] in attn_resolutions,
                     f"enc{level}_{b}")
      skips.append(h)
  h = _res_block(h, emb, h.shape[-1], dropout, True, "mid0")
  h = _res_block(h, emb, h.shape[-1], dropout, False, "mid1")
  for level, mult in reversed(list(enumerate(channel_mult))):
    for b in range(num_blocks + 1):
      h = keras.layers.Concatenate()([h, skips.pop()])
      h = _res_block(h, emb, model_channels * mult, dropout, h.shape[1] in attn_resolutions,
                     f"dec{level}_{b}")
    if level > 0:
      h = keras.layers.UpSampling2D(2, interpolation="nearest")(h)
      h = keras.layers.Conv2D(h.shape[-1], 3, padding="same", name=f"up{level}")(h)
  h = keras.layers.GroupNormalization(_groups(h.shape[-1]), epsilon=1e-6, name="out_gn")(h)
  h = keras.layers.Activation("silu")(h)
  out = keras.layers.Conv2D(image_shape[-1], 3, padding="same", kernel_initializer="zeros",
                            dtype="float32", name="out_conv")(h)
  return keras.Model([x_in, noise_in, labels_in], out, name=name)


def seed_states(model):
  """The state variables of the model's random layers (Dropout, LabelDropout). Keras leaves
  them out of `tf.train.Checkpoint(network=model)`; checkpointing them too makes a resumed run
  draw the same dropout masks as an uninterrupted one."""
  return [sg.state for layer in model._flatten_layers()  # pylint: disable=protected-access
          for sg in getattr(layer, "_seed_generators", [])]
