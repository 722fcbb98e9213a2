"""DDPM++ (Song et al. 2021) as NVlabs/edm `training/networks.py` SongUNet builds it for
`train.py --arch=ddpmpp --cond=1` on CIFAR-10.

F([x, c_noise, class_labels, augment_labels]) -> same shape as x. Each part as SongUNet with
train.py's ddpmpp settings (networks.py SongUNet.__init__ `block_kwargs`, train.py lines 122-124,
159-162):

  * mapping: positional noise embedding (endpoint=True) with its sin/cos halves swapped;
    `map_label(class_labels * sqrt(label_dim))` (a Linear with bias); `map_augment` (no bias) of
    the 9 augmentation labels; two SiLU Linear layers to 4 * model_channels;
  * UNetBlock with adaptive_scale=False: norm0, SiLU, conv0; the embedding's affine projection is
    ADDED to conv0's output before norm1; SiLU, dropout, conv1; skip (1x1 conv where the shape
    changes, resample_proj=True); (h + skip) * sqrt(0.5);
  * attention (one head, qkv and proj 1x1 convs) in the encoder blocks at the attention
    resolutions; in the decoder only in `in0` of the lowest level and in the last block
    (idx == num_blocks) of a level at an attention resolution;
  * down/up sampling inside UNetBlocks with the [1, 1] resample filter: a 2x2 mean and a
    nearest-neighbour 2x repeat (Conv2d's non-fused path with f = [[1, 1], [1, 1]] / 4);
  * initialisation: xavier_uniform everywhere, biases 0; `init_zero` (xavier_uniform * 1e-5) on
    every block's conv1, the attention proj and the output conv; `init_attn` (xavier_uniform *
    sqrt(0.2)) on qkv.

The Keras layer names are SongUNet's module paths with '.' replaced by '_' (`enc_16x16_block0_conv0`
is `model.enc['16x16_block0'].conv0`), so weights map one to one (tools/edm_torch_twin.py). The qkv
conv's 3C output channels are laid out as SongUNet reads them (`reshape(N, C, 3, -1)`): channel
3c + j is component j (q, k, v) of channel c.

EDM CIFAR-10 (cond, augment_dim 9): model_channels 128, channel_mult (2, 2, 2), 4 blocks,
attention at 16x16, dropout 0.13 -> 55,735,299 parameters (tools/edm_torch_twin.py
--count_cifar10 counts the same).
"""
import math

import gin
import keras
import tensorflow as tf

SKIP_SCALE = math.sqrt(0.5)   # networks.py SongUNet block_kwargs skip_scale=np.sqrt(0.5)
INIT_ZERO = 1e-5              # networks.py SongUNet init_zero init_weight=1e-5
INIT_ATTN = math.sqrt(0.2)    # networks.py SongUNet init_attn init_weight=np.sqrt(0.2)
GN_EPS = 1e-6                 # networks.py SongUNet block_kwargs eps=1e-6 (and aux_norm)
AUGMENT_DIM = 9               # train.py: augment_dim = 9 when --augment > 0


def positional_embedding(c_noise, dim, max_positions=10000, endpoint=True, sin_first=True):
  """PositionalEmbedding(endpoint=True) then SongUNet.forward's swap of the halves: [sin, cos]
  of c_noise * (1 / max_positions) ** (i / (dim / 2 - 1)). DhariwalUNet (rgd.edm.adm) uses
  PositionalEmbedding as it is: endpoint=False (i / (dim / 2)) and [cos, sin]."""
  half = dim // 2
  freqs = (1.0 / max_positions) ** (tf.range(half, dtype=tf.float32) /
                                    float(half - (1 if endpoint else 0)))
  x = tf.cast(c_noise, tf.float32)[:, None] * freqs[None, :]
  halves = [tf.sin(x), tf.cos(x)]
  return tf.concat(halves if sin_first else halves[::-1], axis=1)


def group_count(ch):
  """GroupNorm(num_groups=32, min_channels_per_group=4) of networks.py: min(32, ch // 4)."""
  return max(1, min(32, ch // 4))


def _xavier(scale=1.0):
  """xavier_uniform * scale (networks.py weight_init): limit scale * sqrt(6 / (fan_in +
  fan_out)), which is VarianceScaling(scale^2, fan_avg, uniform); Keras' fans of a conv kernel
  are k*k*in and k*k*out as networks.py's."""
  return keras.initializers.VarianceScaling(scale ** 2, "fan_avg", "uniform")


def _dense(units, name, bias=True, scale=1.0, activation=None):
  return keras.layers.Dense(units, use_bias=bias, activation=activation,
                            kernel_initializer=_xavier(scale), name=name)


def _conv(ch, kernel, name, scale=1.0):
  return keras.layers.Conv2D(ch, kernel, padding="same", kernel_initializer=_xavier(scale),
                             name=name)


def _norm(ch, name):
  return keras.layers.GroupNormalization(group_count(ch), epsilon=GN_EPS, name=name)


class EmbeddingLayer(keras.layers.Layer):
  def __init__(self, dim, endpoint=True, sin_first=True, **kwargs):
    super().__init__(**kwargs)
    self.dim, self.endpoint, self.sin_first = dim, endpoint, sin_first

  def call(self, c_noise):
    return tf.cast(positional_embedding(c_noise, self.dim, endpoint=self.endpoint,
                                        sin_first=self.sin_first), self.compute_dtype)


class Scale(keras.layers.Layer):
  """x * factor: SongUNet's sqrt(label_dim) on the labels and skip_scale on the residual sum."""
  def __init__(self, factor, **kwargs):
    super().__init__(**kwargs)
    self.factor = float(factor)

  def call(self, x):
    return x * tf.cast(self.factor, x.dtype)


class AddEmbedding(keras.layers.Layer):
  """x + params[:, None, None, :]: the adaptive_scale=False injection (UNetBlock.forward)."""
  def call(self, inputs):
    x, params = inputs
    return x + tf.cast(params, x.dtype)[:, None, None, :]


class AttentionOp(keras.layers.Layer):
  """Self-attention of UNetBlock on qkv [B, H, W, 3C] with `num_heads` heads of C / num_heads
  channels (networks.py: `qkv.reshape(N * heads, C // heads, 3, -1)`: channel 3 (h C / heads +
  c) + j is component j (q, k, v) of channel c of head h): softmax_k(q . k / sqrt(C / heads))
  weighted sum of v, in float32 (AttentionOp). SongUNet uses one head, DhariwalUNet C / 64."""
  def __init__(self, num_heads=1, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads

  def call(self, qkv):
    shape = tf.shape(qkv)
    ch = qkv.shape[-1] // (3 * self.num_heads)
    parts = tf.reshape(tf.cast(qkv, tf.float32),
                       [shape[0], shape[1] * shape[2], self.num_heads, ch, 3])
    q, k, v = parts[..., 0], parts[..., 1], parts[..., 2]
    w = tf.nn.softmax(tf.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(ch), axis=-1)
    a = tf.einsum("bhqk,bkhc->bqhc", w, v)
    return tf.cast(tf.reshape(a, [shape[0], shape[1], shape[2], ch * self.num_heads]),
                   qkv.dtype)


class LabelDropout(keras.layers.Layer):
  """Zeroes the whole label of an example with probability `rate` in training (SongUNet
  label_dropout, for classifier-free guidance; 0 in EDM's runs)."""
  def __init__(self, rate, **kwargs):
    super().__init__(**kwargs)
    self.rate = rate
    self.seed = keras.random.SeedGenerator(0)

  def call(self, labels, training=False):
    if not training or not self.rate:
      return labels
    keep = keras.random.uniform([tf.shape(labels)[0], 1], seed=self.seed) >= self.rate
    return labels * tf.cast(keep, labels.dtype)


def resample(x, up, down):
  if down:   # Conv2d down with f = ones(2, 2) / 4, stride 2, padding 0
    return keras.layers.AveragePooling2D(2)(x)
  if up:     # conv_transpose2d with f * 4 = ones(2, 2), stride 2: each pixel repeated 2x2
    return keras.layers.UpSampling2D(2, interpolation="nearest")(x)
  return x


def unet_block(x, emb, out_ch, name, dropout, attention=False, up=False, down=False):
  """SongUNet's UNetBlock with the ddpmpp block_kwargs (adaptive_scale=False, one head)."""
  in_ch = x.shape[-1]
  h = keras.layers.Activation("silu")(_norm(in_ch, name + "_norm0")(x))
  h = _conv(out_ch, 3, name + "_conv0")(resample(h, up, down))
  params = _dense(out_ch, name + "_affine")(emb)
  h = _norm(out_ch, name + "_norm1")(AddEmbedding()([h, params]))
  h = keras.layers.Dropout(dropout)(keras.layers.Activation("silu")(h))
  h = _conv(out_ch, 3, name + "_conv1", scale=INIT_ZERO)(h)
  skip = x
  if out_ch != in_ch or up or down:   # kernel 1 because resample_proj=True
    skip = _conv(out_ch, 1, name + "_skip")(resample(x, up, down))
  x = Scale(SKIP_SCALE)(keras.layers.Add()([h, skip]))
  if attention:
    qkv = _conv(3 * out_ch, 1, name + "_qkv", scale=INIT_ATTN)(_norm(out_ch, name + "_norm2")(x))
    a = _conv(out_ch, 1, name + "_proj", scale=INIT_ZERO)(AttentionOp()(qkv))
    x = Scale(SKIP_SCALE)(keras.layers.Add()([a, x]))
  return x


def encoder_decoder(x, stem, block, channel_mult, model_channels, num_blocks, attn_resolutions,
                    decoder_attention):
  """The U-Net walk that networks.py's SongUNet and DhariwalUNet share. Encoder, per level at
  resolution R: `enc_RxR_conv` = stem(x, name) at level 0, else a `down` block; then
  `num_blocks` blocks of model_channels * mult (attention at attn_resolutions); every output is
  kept as a skip. Decoder, from the lowest level: `in0` (attention) and `in1` there, else an
  `up` block; then num_blocks + 1 blocks on [h, skip] (concatenated in that order), attention
  where decoder_attention(idx, R). `block(h, ch, name, attention=, up=, down=)`."""
  res = x.shape[1]
  skips = []
  h = x
  for level, mult in enumerate(channel_mult):
    r = res >> level
    if level == 0:
      h = stem(h, f"enc_{r}x{r}_conv")
    else:
      h = block(h, h.shape[-1], f"enc_{r}x{r}_down", down=True)
    skips.append(h)
    for idx in range(num_blocks):
      h = block(h, model_channels * mult, f"enc_{r}x{r}_block{idx}",
                attention=r in attn_resolutions)
      skips.append(h)
  for level, mult in reversed(list(enumerate(channel_mult))):
    r = res >> level
    if level == len(channel_mult) - 1:
      h = block(h, h.shape[-1], f"dec_{r}x{r}_in0", attention=True)
      h = block(h, h.shape[-1], f"dec_{r}x{r}_in1")
    else:
      h = block(h, h.shape[-1], f"dec_{r}x{r}_up", up=True)
    for idx in range(num_blocks + 1):
      h = keras.layers.Concatenate()([h, skips.pop()])
      h = block(h, model_channels * mult, f"dec_{r}x{r}_block{idx}",
                attention=decoder_attention(idx, r))
  return h


@gin.configurable
def edm_unet(image_shape=(32, 32, 3), num_classes=10, model_channels=128,
             channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.10,
             label_dropout=0.0, augment_dim=AUGMENT_DIM, name="edm_unet"):
  """Builds F (SongUNet, ddpmpp). Defaults are EDM's CIFAR-10 cond run (train.py: cres [2, 2, 2],
  augment_dim 9; dropout set to 0.13 by gin/edm_cifar10.gin). Inputs: x, c_noise, one-hot labels
  (used when num_classes > 0) and, when augment_dim > 0, the augmentation labels (zeros = none,
  which equals SongUNet's `augment_labels=None` since map_augment has no bias)."""
  res = image_shape[0]
  x_in = keras.Input(image_shape, name="x")
  noise_in = keras.Input((), name="c_noise")
  labels_in = keras.Input((num_classes,), name="labels")
  inputs = [x_in, noise_in, labels_in]
  emb = EmbeddingLayer(model_channels, name="map_noise")(noise_in)
  if num_classes:
    labels = Scale(math.sqrt(num_classes))(LabelDropout(label_dropout)(labels_in))
    emb = keras.layers.Add()([emb, _dense(model_channels, "map_label")(labels)])
  if augment_dim:
    aug_in = keras.Input((augment_dim,), name="augment_labels")
    inputs.append(aug_in)
    emb = keras.layers.Add()([emb, _dense(model_channels, "map_augment", bias=False)(aug_in)])
  emb = _dense(model_channels * 4, "map_layer0", activation="silu")(emb)   # channel_mult_emb 4
  emb = _dense(model_channels * 4, "map_layer1", activation="silu")(emb)
  block = lambda h, ch, n, **kw: unet_block(h, emb, ch, n, dropout, **kw)

  h = encoder_decoder(
      x_in, lambda h, n: _conv(model_channels, 3, n)(h), block, channel_mult, model_channels,
      num_blocks, attn_resolutions, lambda idx, r: idx == num_blocks and r in attn_resolutions)
  h = keras.layers.Activation("silu")(_norm(h.shape[-1], f"dec_{res}x{res}_aux_norm")(h))
  out = keras.layers.Conv2D(image_shape[-1], 3, padding="same", dtype="float32",
                            kernel_initializer=_xavier(INIT_ZERO),
                            name=f"dec_{res}x{res}_aux_conv")(h)
  return keras.Model(inputs, out, name=name)


def seed_states(model):
  """The state variables of the model's random layers (Dropout, LabelDropout). Keras leaves
  them out of `tf.train.Checkpoint(network=model)`; checkpointing them too makes a resumed run
  draw the same dropout masks as an uninterrupted one."""
  return [sg.state for layer in model._flatten_layers()  # pylint: disable=protected-access
          for sg in getattr(layer, "_seed_generators", [])]


def augment_dim_of(network):
  """The width of the network's augmentation-label input, 0 when it has none."""
  return int(network.inputs[3].shape[-1]) if len(network.inputs) > 3 else 0


def zero_augment_labels(network, batch):
  """Augmentation labels meaning "not augmented" (sampling: EDM passes none)."""
  return tf.zeros([batch, augment_dim_of(network)], tf.float32)

