"""ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as NVlabs/edm
`training/networks.py` DhariwalUNet builds it: the ImageNet-64 network of guided-diffusion's
released `64x64_diffusion.pt` and of EDM's `train.py --arch=adm` runs.

F([x, c_noise, class_labels, augment_labels]) -> [B, H, W, out_channels]. Each part as
DhariwalUNet (networks.py, its `block_kwargs`: channels_per_head 64, UNetBlock defaults
adaptive_scale=True, skip_scale 1, eps 1e-5, resample_proj False):

  * mapping: PositionalEmbedding(endpoint=False), [cos, sin] of c_noise * (1 / 10000) **
    (i / (C / 2)) (guided-diffusion's `timestep_embedding`); `map_augment` (no bias); map_layer0,
    SiLU, map_layer1; THEN `map_label(class_labels)` (no bias: guided-diffusion's label
    nn.Embedding, as a one-hot matmul) is added; SiLU;
  * UNetBlock with adaptive_scale=True: norm0, SiLU, conv0 (2x2 mean / nearest 2x repeat before
    it when down / up); the embedding's affine projection split into (scale, shift) and applied
    as silu(shift + norm1(h) * (scale + 1)) (guided-diffusion's use_scale_shift_norm); dropout,
    conv1; skip: a 1x1 conv only where the width changes, a bare resample where only the size
    does; h + skip (no rescaling);
  * attention with out_channels // 64 heads after every block at an attention resolution, in
    the encoder and the decoder, and in `in0` of the lowest decoder level; x + proj(attention);
    none in a block narrower than 64 channels (networks.py: num_heads 0 = no attention);
  * out_norm, SiLU, out_conv;
  * initialisation: kaiming_uniform * sqrt(1/3) for weights and biases (limit 1 / sqrt(fan_in),
    PyTorch's default); `init_zero` (all zeros) on every conv1, proj, map_augment and out_conv;
    map_label kaiming_normal * sqrt(label_dim), i.e. N(0, 1).

Keras layer names are DhariwalUNet's module paths with '.' -> '_' (`enc_32x32_block0_qkv` is
`model.enc['32x32_block0'].qkv`), so tools/adm_torch_twin.py maps weights one to one; the qkv
channels are laid out as networks.py reads them (rgd.edm.unet.AttentionOp). guided-diffusion's
own key names are mapped by rgd.interop.guided_diffusion.

ImageNet-64 (guided-diffusion's 64x64 flags = EDM train.py --arch=adm): model_channels 192,
channel_mult (1, 2, 3, 4), 3 blocks, attention at 32, 16, 8, dropout 0.1, 1000 classes ->
295,904,454 parameters with out_channels 6 (learn_sigma; iDDPMPrecond) and 295,899,267 with 3
(EDMPrecond), as NVlabs' networks.py counts them.
"""
import math

import gin
import keras
import tensorflow as tf

from rgd.edm import unet

GN_EPS = 1e-5              # networks.py GroupNorm default eps (DhariwalUNet does not set it)
CHANNELS_PER_HEAD = 64     # DhariwalUNet block_kwargs channels_per_head=64
IMAGENET64 = dict(image_shape=(64, 64, 3), num_classes=1000, model_channels=192,
                  channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(32, 16, 8),
                  dropout=0.1)


def _kaiming(fan_in):
  """kaiming_uniform * sqrt(1/3) (DhariwalUNet `init`): uniform(+-sqrt(3 / fan_in) / sqrt(3))
  = uniform(+-1 / sqrt(fan_in)), for weights and biases alike."""
  limit = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(-limit, limit)


def _dense(units, fan_in, name, bias=True, zero=False):
  init = "zeros" if zero else _kaiming(fan_in)
  return keras.layers.Dense(units, use_bias=bias, kernel_initializer=init,
                            bias_initializer="zeros" if zero else _kaiming(fan_in), name=name)


def _conv(ch, kernel, fan_in_ch, name, zero=False, dtype=None):
  fan_in = fan_in_ch * kernel * kernel
  init = "zeros" if zero else _kaiming(fan_in)
  return keras.layers.Conv2D(ch, kernel, padding="same", kernel_initializer=init,
                             bias_initializer=init, dtype=dtype, name=name)


def _norm(ch, name):
  return keras.layers.GroupNormalization(unet.group_count(ch), epsilon=GN_EPS, name=name)


class ScaleShift(keras.layers.Layer):
  """shift + h * (scale + 1) with (scale, shift) = params.chunk(2) (UNetBlock adaptive_scale;
  guided-diffusion ResBlock use_scale_shift_norm: `out_norm(h) * (1 + scale) + shift`)."""
  def call(self, inputs):
    h, params = inputs
    scale, shift = tf.split(tf.cast(params, h.dtype)[:, None, None, :], 2, axis=-1)
    return shift + h * (scale + 1.0)


def adm_block(x, emb, out_ch, name, dropout, attention=False, up=False, down=False):
  """DhariwalUNet's UNetBlock (adaptive_scale, no skip scale, heads of 64 channels)."""
  in_ch = x.shape[-1]
  h = keras.layers.Activation("silu")(_norm(in_ch, name + "_norm0")(x))
  h = _conv(out_ch, 3, in_ch, name + "_conv0")(unet.resample(h, up, down))
  params = _dense(2 * out_ch, emb.shape[-1], name + "_affine")(emb)
  h = ScaleShift()([_norm(out_ch, name + "_norm1")(h), params])
  h = keras.layers.Dropout(dropout)(keras.layers.Activation("silu")(h))
  h = _conv(out_ch, 3, out_ch, name + "_conv1", zero=True)(h)
  skip = unet.resample(x, up, down)
  if out_ch != in_ch:   # resample_proj=False: a 1x1 conv only where the width changes
    skip = _conv(out_ch, 1, in_ch, name + "_skip")(skip)
  x = keras.layers.Add()([h, skip])
  heads = out_ch // CHANNELS_PER_HEAD if attention else 0
  if heads:   # UNetBlock: num_heads = out_channels // 64, and no attention when that is 0
    qkv = _conv(3 * out_ch, 1, out_ch, name + "_qkv")(_norm(out_ch, name + "_norm2")(x))
    a = unet.AttentionOp(num_heads=heads)(qkv)
    x = keras.layers.Add()([_conv(out_ch, 1, out_ch, name + "_proj", zero=True)(a), x])
  return x


@gin.configurable
def adm_unet(image_shape=(64, 64, 3), num_classes=1000, out_channels=None, model_channels=192,
             channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
             attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0.0, augment_dim=0,
             name="adm_unet"):
  """Builds F (DhariwalUNet). Defaults are ImageNet-64 (networks.py DhariwalUNet defaults,
  train.py --arch=adm channel_mult [1, 2, 3, 4]). `out_channels` None = the image's channels
  (EDMPrecond); iDDPMPrecond (guided-diffusion's learn_sigma model) takes 2x. Inputs as
  rgd.edm.unet.edm_unet: x, c_noise, one-hot labels, and the augmentation labels when
  augment_dim > 0, so rgd.edm.denoiser and the training loop drive either network."""
  out_channels = out_channels or image_shape[-1]
  emb_ch = model_channels * channel_mult_emb
  x_in = keras.Input(image_shape, name="x")
  noise_in = keras.Input((), name="c_noise")
  labels_in = keras.Input((num_classes,), name="labels")
  inputs = [x_in, noise_in, labels_in]
  emb = unet.EmbeddingLayer(model_channels, endpoint=False, sin_first=False,
                            name="map_noise")(noise_in)
  if augment_dim:
    aug_in = keras.Input((augment_dim,), name="augment_labels")
    inputs.append(aug_in)
    emb = keras.layers.Add()([emb, _dense(model_channels, augment_dim, "map_augment",
                                          bias=False, zero=True)(aug_in)])
  emb = keras.layers.Activation("silu")(_dense(emb_ch, model_channels, "map_layer0")(emb))
  emb = _dense(emb_ch, emb_ch, "map_layer1")(emb)
  if num_classes:
    labels = unet.LabelDropout(label_dropout)(labels_in)
    map_label = keras.layers.Dense(emb_ch, use_bias=False, name="map_label",
                                   kernel_initializer=keras.initializers.RandomNormal(0.0, 1.0))
    emb = keras.layers.Add()([emb, map_label(labels)])
  emb = keras.layers.Activation("silu")(emb)
  block = lambda h, ch, n, **kw: adm_block(h, emb, ch, n, dropout, **kw)

  stem = lambda h, n: _conv(model_channels * channel_mult[0], 3, image_shape[-1], n)(h)
  h = unet.encoder_decoder(x_in, stem, block, channel_mult, model_channels, num_blocks,
                           attn_resolutions, lambda idx, r: r in attn_resolutions)
  h = keras.layers.Activation("silu")(_norm(h.shape[-1], "out_norm")(h))
  out = _conv(out_channels, 3, h.shape[-1], "out_conv", zero=True, dtype="float32")(h)
  return keras.Model(inputs, out, name=name)
