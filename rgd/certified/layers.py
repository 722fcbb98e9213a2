"""Keras layers of certifiable networks; each knows its Lipschitz constant.

L2 (GloRo / LiResNet; klasleino/gloro `gloro/layers`, hukkai/liresnet `models/`):
  `LipConv2D`, `LipDense`   conv / dense with a persistent power-iteration iterate
  `LiResNetBlock`           one conv with kernel I + depth^-1/2 * affine * W (Hu et al. 2023;
                            gloro `LiResNetBlock.kernel`, liresnet snapshot `LinearRes`): the
                            residual x + conv(x) is itself one linear conv, so its Lipschitz
                            constant is that conv's spectral norm, not 1 + ||W||
  `MinMax`                  sorts channel pairs (halves, as liresnet `MinMax`); 1-Lipschitz
  `Center`                  x - 0.5 (liresnet `x.sub(.5)`); a shift, 1-Lipschitz
  `GloroHead`               float32 logits; optional last-layer normalisation (LLN: unit-norm
                            class weights, liresnet `head.use_lln`)
Linf (Zhang et al. 2021/2022; zbh2047/L_inf-dist-net-v2 `core/modules/norm_dist.py`,
zbh2047/SortNet `core/models/norm_dist.py`):
  `LinfDist`                y_j = ||x - w_j||_p (p annealed to inf) - mean shift + bias;
                            with `sort_q` the SortNet neuron sum_k q(1-q)^k |x - w_j|_(k)
  `LogitScale`              logits = -s * y (the reference's trainable `scalar`)

Every layer is registered for Keras save/load. Power iterates and running means are
non-trainable float32 variables; running means are listed in `moving_statistics` so that the
weight average follows them like BN statistics (rgd/models/common.py).
"""
import keras
import numpy as np
import tensorflow as tf

from rgd.certified import lipschitz
from rgd.errors import ConfigError

PKG = "rgd.certified"


def _iterate(layer, shape):
  return layer.add_weight(name="power_iterate", shape=shape, trainable=False, dtype="float32",
                          initializer=keras.initializers.RandomNormal(seed=0),
                          aggregation="only_first_replica")


# ------------------------------------------------------------------------------------------
# L2 layers.


class LipschitzLayer(keras.layers.Layer):
  """A layer with `power_lipschitz(iterations, update)` (training estimate, a tf scalar) and
  `certified_lipschitz()` (a float64 upper bound)."""

  def power_lipschitz(self, iterations, update=True):
    raise NotImplementedError

  def certified_lipschitz(self):
    raise NotImplementedError


@keras.saving.register_keras_serializable(package=PKG)
class LipConv2D(LipschitzLayer):

  def __init__(self, filters, kernel_size, strides=1, padding="same", use_bias=True,
               kernel_initializer="orthogonal", **kwargs):
    super().__init__(**kwargs)
    self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
    self.padding, self.use_bias = padding.upper(), bool(use_bias)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    cin = int(input_shape[-1])
    self.input_hw = (int(input_shape[1]), int(input_shape[2]))
    self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, self.kernel_size,
                                                        cin, self.filters),
                                  initializer=self.kernel_initializer)
    self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                 if self.use_bias else None)
    self.iterate = _iterate(self, (1, *self.input_hw, cin))

  def effective_kernel(self):
    return self.kernel

  def call(self, x):
    k = tf.cast(self.effective_kernel(), x.dtype)
    y = tf.nn.conv2d(x, k, self.strides, self.padding)
    if self.bias is not None:
      y = y + tf.cast(self.bias, y.dtype)
    return y

  def compute_output_shape(self, input_shape):
    h = lipschitz.conv_output_size(input_shape[1], self.kernel_size, self.strides, self.padding)
    w = lipschitz.conv_output_size(input_shape[2], self.kernel_size, self.strides, self.padding)
    return (input_shape[0], h, w, self.filters)

  def power_lipschitz(self, iterations, update=True):
    sigma, x = lipschitz.conv_power_iteration(self.effective_kernel(), self.iterate, iterations,
                                              self.strides, self.padding)
    if update:
      self.iterate.assign(x)
    return sigma

  def certified_lipschitz(self):
    return lipschitz.conv_spectral_bound(keras.ops.convert_to_numpy(self.effective_kernel()),
                                         self.input_hw, self.strides, self.padding)

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size,
                strides=self.strides, padding=self.padding, use_bias=self.use_bias,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer))


@keras.saving.register_keras_serializable(package=PKG)
class LiResNetBlock(LipConv2D):
  """x -> conv(x) with kernel I + residual_scale * affine * W: x + scale * conv_W(x) as one conv
  (gloro `LiResNetBlock`; residual_scale = depth**-0.5 as gloro `_liresnet_CxCC2F`)."""

  def __init__(self, kernel_size=3, residual_scale=1.0, **kwargs):
    kwargs.pop("filters", None)
    kwargs.setdefault("kernel_initializer", None)     # set in build: it needs the width
    super().__init__(filters=0, kernel_size=kernel_size, strides=1, padding="same", **kwargs)
    self.residual_scale = float(residual_scale)

  def build(self, input_shape):
    c = int(input_shape[-1])
    self.filters = c
    if self.kernel_initializer is None:
      # hu23 `models/blocks.py`, `LinearRes`: torch.randn(planes, planes, 3, 3) / (planes * 9).
      self.kernel_initializer = keras.initializers.RandomNormal(
          stddev=1.0 / (c * self.kernel_size ** 2))
    super().build(input_shape)
    self.affine = self.add_weight(name="affine", shape=(c,), initializer="ones")
    identity = np.zeros((self.kernel_size, self.kernel_size, c, c), np.float32)
    centre = (self.kernel_size - 1) // 2
    identity[centre, centre] = np.eye(c)
    self.identity = tf.constant(identity)

  def effective_kernel(self):
    return self.identity + self.residual_scale * (tf.cast(self.affine, tf.float32) *
                                                  tf.cast(self.kernel, tf.float32))

  def get_config(self):
    config = super().get_config()
    for key in ("filters", "strides", "padding"):
      config.pop(key)
    return dict(config, residual_scale=self.residual_scale)


@keras.saving.register_keras_serializable(package=PKG)
class LipDense(LipschitzLayer):

  def __init__(self, units, use_bias=True, kernel_initializer="orthogonal", **kwargs):
    super().__init__(**kwargs)
    self.units, self.use_bias = int(units), bool(use_bias)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    d = int(input_shape[-1])
    self.kernel = self.add_weight(name="kernel", shape=(d, self.units),
                                  initializer=self.kernel_initializer)
    self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
                 if self.use_bias else None)
    self.iterate = _iterate(self, (d,))

  def call(self, x):
    y = tf.matmul(x, tf.cast(self.kernel, x.dtype))
    if self.bias is not None:
      y = y + tf.cast(self.bias, y.dtype)
    return y

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.units)

  def power_lipschitz(self, iterations, update=True):
    sigma, u = lipschitz.dense_power_iteration(self.kernel, self.iterate, iterations)
    if update:
      self.iterate.assign(u)
    return sigma

  def certified_lipschitz(self):
    return lipschitz.dense_spectral_bound(keras.ops.convert_to_numpy(self.kernel))

  def get_config(self):
    return dict(super().get_config(), units=self.units, use_bias=self.use_bias,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer))


@keras.saving.register_keras_serializable(package=PKG)
class MinMax(keras.layers.Layer):
  """[max(a, b), min(a, b)] of the two channel halves a, b (hukkai/liresnet
  `models/layers/activation.py`, `MinMax`); a sort of pairs, hence 1-Lipschitz in L2 and
  Linf."""

  def call(self, x):
    a, b = tf.split(x, 2, axis=-1)
    return tf.concat([tf.maximum(a, b), tf.minimum(a, b)], axis=-1)

  def build(self, input_shape):
    if int(input_shape[-1]) % 2:
      raise ConfigError(f"MinMax needs an even number of channels, got {input_shape[-1]}")


@keras.saving.register_keras_serializable(package=PKG)
class Center(keras.layers.Layer):
  """x - 0.5 (hukkai/liresnet `GloroNet.forward`): a shift keeps every Lipschitz constant, which
  a division by the data's std would not."""

  def call(self, x):
    return x - tf.cast(0.5, x.dtype)


@keras.saving.register_keras_serializable(package=PKG)
class GloroHead(keras.layers.Layer):
  """The last (logit) layer, in float32. `lln`: class weight vectors normalised to unit L2
  norm (last-layer normalisation of Hu et al.; liresnet `head.get_weight`)."""

  def __init__(self, num_classes, lln=True, **kwargs):
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self.num_classes, self.lln = int(num_classes), bool(lln)

  def build(self, input_shape):
    d = int(input_shape[-1])
    self.kernel = self.add_weight(name="kernel", shape=(d, self.num_classes),
                                  initializer="glorot_normal")
    self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

  def head_kernel(self):
    """The effective [d, K] kernel: column i is class i's weight vector w_i."""
    k = tf.cast(self.kernel, tf.float32)
    if self.lln:
      k = k / tf.maximum(tf.norm(k, axis=0, keepdims=True), 1e-12)
    return k

  def call(self, x):
    return tf.matmul(tf.cast(x, tf.float32), self.head_kernel()) + self.bias

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def get_config(self):
    return dict(super().get_config(), num_classes=self.num_classes, lln=self.lln)


# ------------------------------------------------------------------------------------------
# Linf layers.


def lp_distance(x, w, p, keep_mask=None):
  """||x_b - w_j||_p for x [B, d], w [d, n] -> [B, n]; p a float32 scalar (inf allowed).
  Scaled by the max so that large p neither overflows nor underflows. `keep_mask` [B, d]: the
  distance over the kept coordinates only (a dropped |x_i - w_i| counts 0 in the max and in
  the sum of powers; reference `norm_dist_dropout` over the sampled index set)."""
  z = tf.abs(x[:, :, None] - w[None])                 # [B, d, n]
  if keep_mask is not None:
    z = z * tf.cast(keep_mask, z.dtype)[:, :, None]
  m = tf.reduce_max(z, axis=1)                        # the Linf distance
  if p is None:
    return m
  safe_m = tf.maximum(m, 1e-12)
  # p = inf through the finite branch would give inf * 0 = NaN gradients even where unused.
  p_finite = tf.where(tf.math.is_inf(p), tf.constant(2.0, p.dtype), p)
  lp = safe_m * tf.pow(tf.reduce_sum(tf.pow(z / safe_m[:, None], p_finite), axis=1),
                       1.0 / p_finite)
  return tf.where(tf.math.is_inf(p), m, lp)


def sort_distance(x, w, q, truncate):
  """SortNet neuron (zbh2047/SortNet `core/norm_dist.py`, `sort_neuron`, pure-torch branch):
  sum_{k < T} q (1-q)^k |x - w|_(k) / (1 - (1-q)^T), |.|_(k) the k-th largest. A convex
  combination of order statistics of |x - w|, each 1-Lipschitz in Linf, hence 1-Lipschitz.
  It is the expectation of the Linf distance over a random subset keeping each coordinate with
  probability q (the k-th largest is the subset's max with probability q (1-q)^k), which is
  how SortNet trains it (`LinfDist` with `dropout`)."""
  z = tf.abs(x[:, :, None] - w[None])                 # [B, d, n]
  top = tf.math.top_k(tf.transpose(z, [0, 2, 1]), k=truncate).values  # [B, n, T]
  return tf.linalg.matvec(top, tf.constant(sort_coefficients(q, truncate), top.dtype))


SUB_BATCH = 32   # reference `norm_dist.py`: one index set per sub-batch of 32 examples


def subset_mask(batch, d, q, seed):
  """[batch, d] keep-mask as the reference's `sample_mask`: one count ~ Binomial(d, q) for the
  batch, and for each sub-batch of 32 examples a uniformly random subset of that size (so each
  coordinate is kept with probability q, independently). `seed`: a stateless [2] int seed."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  count = tf.reduce_sum(tf.cast(tf.random.stateless_uniform([d], seeds[0]) < q, tf.int32))
  subs = (batch + SUB_BATCH - 1) // SUB_BATCH
  u = tf.random.stateless_uniform([subs, d], seeds[1])
  ranks = tf.argsort(tf.argsort(u, axis=1), axis=1)
  return tf.repeat(ranks < count, SUB_BATCH, axis=0)[:batch]


def sort_coefficients(q, truncate):
  """q (1-q)^k for k < T, normalised to sum 1 (reference `sort_neuron`: / (1 - (1-q)^T))."""
  c = q * (1.0 - q) ** np.arange(truncate)
  return c / c.sum()


@keras.saving.register_keras_serializable(package=PKG)
class LinfDist(keras.layers.Layer):
  """An l_inf-dist (or SortNet) layer: y_j = d(x, w_j) - mean_shift_j + b_j.

  Training: d = ||x - w_j||_p with the current `p` (annealed from 8 to inf by the objective);
  with `dropout` (SortNet, `sort_q` = q) over a random subset of the inputs (`subset_mask`),
  whose expectation at p = inf is the inference sort neuron; a sort layer without dropout
  trains the sort neuron itself (no reference trains it so). The batch mean of each unit is
  subtracted and tracked in `running_mean` (momentum 0.1, reference `MeanShift`); with
  `out_dropout` (the next layer's q) the mean of unit j is over the sub-batches whose next-layer
  subset keeps j (reference `MeanShiftDropout` with `index`).
  Inference: d = ||x - w_j||_inf (or the exact sort neuron) minus the running mean: a constant
  shift, so each output is 1-Lipschitz in Linf. This is the network that is certified.

  Masks: layer k's input mask and layer k-1's output mask are the same draw (the reference
  passes it in `dropout_buffer`): both use the stateless seed (call count, `index` k), the call
  count a per-layer counter that all layers of a model advance together.
  """

  def __init__(self, units, mean_shift=True, use_bias=False, identity_val=None, sort_q=None,
               sort_truncate=10, dropout=False, momentum=0.1, out_dropout=None, index=0,
               **kwargs):
    kwargs["dtype"] = "float32"   # distances of 5000-dim inputs need float32
    super().__init__(**kwargs)
    self.units, self.mean_shift, self.use_bias = int(units), bool(mean_shift), bool(use_bias)
    self.identity_val = None if identity_val is None else float(identity_val)
    self.sort_q = None if sort_q is None else float(sort_q)
    self.sort_truncate, self.dropout = int(sort_truncate), bool(dropout)
    if self.dropout and self.sort_q is None:
      raise ConfigError(f"LinfDist {self.name}: dropout needs sort_q (the keep probability)")
    self.out_dropout = None if out_dropout is None else float(out_dropout)
    self.momentum, self.index = float(momentum), int(index)

  def build(self, input_shape):
    d = int(input_shape[-1])
    # Weights ~ N(0, 1) (reference `std=1.0`); identity_val puts -identity_val on the
    # "diagonal" so that a deep net starts close to passing its input through.
    init = keras.initializers.RandomNormal(stddev=1.0)
    self.weight = self.add_weight(name="weight", shape=(d, self.units), initializer=init)
    if self.identity_val is not None and d <= self.units:
      w = keras.ops.convert_to_numpy(self.weight)
      w[np.arange(self.units) % d, np.arange(self.units)] = -self.identity_val
      self.weight.assign(w)
    self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
                 if self.use_bias else None)
    self.running_mean = self.add_weight(name="running_mean", shape=(self.units,),
                                        initializer="zeros", trainable=False,
                                        aggregation="mean")
    self.p = self.add_weight(name="p", shape=(), trainable=False, aggregation="only_first_replica",
                             initializer=keras.initializers.Constant(float("inf")))
    self.calls = self.add_weight(name="dropout_calls", shape=(), trainable=False,
                                 initializer="zeros", aggregation="only_first_replica")
    self._d = d

  @property
  def moving_statistics(self):
    return [self.running_mean] if self.mean_shift else []

  def _mask(self, batch, d, q, index):
    seed = tf.stack([tf.cast(self.calls, tf.int32), tf.constant(index, tf.int32)])
    return subset_mask(batch, d, q, seed)

  def inference_distance(self, x):
    w = tf.cast(self.weight, tf.float32)
    if self.sort_q is not None:
      return sort_distance(x, w, self.sort_q, min(self.sort_truncate, self._d))
    return lp_distance(x, w, None)

  def call(self, x, training=False):
    x = tf.cast(x, tf.float32)
    if not training:
      y = self.inference_distance(x)
      mean = self.running_mean
    else:
      batch = tf.shape(x)[0]
      w = tf.cast(self.weight, tf.float32)
      if self.sort_q is not None and not self.dropout:
        y = sort_distance(x, w, self.sort_q, min(self.sort_truncate, self._d))
      else:
        keep = (self._mask(batch, self._d, self.sort_q, self.index) if self.dropout else None)
        y = lp_distance(x, w, self.p, keep)
      if self.out_dropout is not None:
        out = tf.cast(self._mask(batch, self.units, self.out_dropout, self.index + 1), y.dtype)
        mean = tf.reduce_sum(y * out, axis=0) / tf.maximum(tf.reduce_sum(out, axis=0), 1e-10)
      else:
        mean = tf.reduce_mean(y, axis=0)
      self.calls.assign_add(1.0)
      if self.mean_shift:
        self.running_mean.assign(self.running_mean * (1 - self.momentum) +
                                 tf.stop_gradient(mean) * self.momentum)
    if self.mean_shift:
      y = y - mean
    if self.bias is not None:
      y = y + self.bias
    return y

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.units)

  def get_config(self):
    return dict(super().get_config(), units=self.units, mean_shift=self.mean_shift,
                use_bias=self.use_bias, identity_val=self.identity_val, sort_q=self.sort_q,
                sort_truncate=self.sort_truncate, dropout=self.dropout, momentum=self.momentum,
                out_dropout=self.out_dropout, index=self.index)


@keras.saving.register_keras_serializable(package=PKG)
class InputNormalize(keras.layers.Layer):
  """(x - mean_c) / std with a per-channel mean and one scalar std, as both l_inf references
  normalise (`dataset.py`: `Normalize(mean, [std] * 3)`, CIFAR-10 std 0.2009). One std keeps
  the Linf geometry: the network sees eps / std, its Linf Lipschitz constant is 1 / std.
  Attacks and certificates still work on [0, 1] pixels."""

  def __init__(self, mean=(0.0,), std=1.0, **kwargs):
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self.mean, self.std = tuple(float(m) for m in mean), float(std)
    if self.std <= 0:
      raise ConfigError(f"InputNormalize: std must be positive, got {std}")
    self.mean_max = max(abs(m) for m in self.mean)

  def call(self, x):
    return (tf.cast(x, tf.float32) - tf.constant(self.mean, tf.float32)) / self.std

  def get_config(self):
    return dict(super().get_config(), mean=self.mean, std=self.std)


@keras.saving.register_keras_serializable(package=PKG)
class LogitScale(keras.layers.Layer):
  """logits = -s * y (reference `MLPModel.forward`: `-x * self.scalar`, s trainable, init 1).
  Each logit is then |s|-Lipschitz in Linf.

  `lr_ratio`: s = lr_ratio * v with v the variable (init 1 / lr_ratio). Adam's step is
  invariant to the gradient's scale, so v moves by the run's learning rate and s by lr_ratio
  times it: the reference's separate `--scalar-lr` (L_inf-dist-net-v2 `main.py`, a second
  parameter group on the same cosine schedule; 0.006 / 0.03 = 0.2 in its CIFAR-10 command)."""

  def __init__(self, lr_ratio=1.0, **kwargs):
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self.lr_ratio = float(lr_ratio)

  def build(self, input_shape):
    self.scale = self.add_weight(name="scale", shape=(),
                                 initializer=keras.initializers.Constant(1.0 / self.lr_ratio))

  def value(self):
    """The effective s."""
    return self.lr_ratio * self.scale

  def call(self, y):
    return -self.value() * tf.cast(y, tf.float32)

  def get_config(self):
    return dict(super().get_config(), lr_ratio=self.lr_ratio)
