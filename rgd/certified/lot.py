"""LOT: Layer-wise Orthogonal Training (Xu, Li & Li, NeurIPS 2022), seed 004's fourth model.

A LOT convolution parametrises a free kernel V and uses, per frequency of the FFT of the
zero-padded image, the orthogonalised W = (V V^H)^{-1/2} V. As AI-secure/Layerwise-Orthogonal-
Training `lot_ortho_conv.py` (`LOT.forward`, read at commit 65f7ea4; line numbers below):

* stride 2 is a pixel unshuffle (einops "b c (w k1) (h k2) -> b (c k1 k2) w h", :36) followed
  by a stride-1 LOT conv with 4x the input channels (:9-11);
* the input is zero-padded by k // 2 on each side (:40-42) and transformed by fft2 over the
  padded n x n image; the kernel by fft2 zero-padded to n x n, conjugated and multiplied by
  exp(2 pi i s (u + v) / n), s = -(k - 1) // 2 (:29-32, :52-53), which centres it;
* S = V V^H + 1e-4 I (cout x cout, :55-56), divided by ||S||_F + 1e-4 (:57-58); 10 coupled
  Newton-Schulz iterations T = (3 I - Z Y) / 2, Y <- Y T, Z <- T Z from Y = S, Z = I (:60-70;
  `iter_T` = `eval_iter_T` = 10, :15-16) give Z ~ S^{-1/2}; W = Z V / sqrt(||S||_F + 1e-4)
  (:71). With cout < cin the rows of W are orthonormal; with cout > cin (e.g. 3 -> 32 in the
  first layer) S has rank cin and the 1e-4 keeps it invertible: W = V (V^H V + 1e-4 I)^{-1/2}
  shrinks every singular value below 1;
* output: ifft2, real part, crop the padding, add the bias (:73-80);
* init (:20-27): identity kernel and zero bias when cout == cin (after the unshuffle), else
  torch's Conv2d default, U(+-1/sqrt(fan_in)) for kernel and bias.

LipConvnet-n (`lip_convnets.py`) is five stages of n / 5 `LipBlock`s (LOT conv -> MaxMin, the
channel halves' max then min, `custom_activations.py` :8-15); each stage's last block has
stride 2 (kernel 1 in the fifth stage), so 32 x 32 x 3 goes to 1 x 1 x 32 * 32 channels. With
`--residual` (`LipResNet`, `ResLayer`, :84-112; the README's command) every block between a
stage's first and last is mixed as x <- 0.5 x + 0.5 block(x) (sigmoid(0), not trained). The
last layer is a LOT 1x1 conv (an orthogonalised dense layer) or, with `--lln`, a linear layer
with unit-norm class rows (`NormalizedLinear`, :13-18). Inputs are normalised by the CIFAR-10
mean and one std 0.2507 for every channel (`utils.py` :9-10, also for CIFAR-100).

Soundness. Newton iterations in float32 leave W only approximately orthogonal, so no layer is
assumed 1-Lipschitz: `certified_lipschitz` takes W as the forward pass computes it (the same
function, float32) and bounds the layer by max over frequencies of sigma_max(W(f)) in float64
(zero padding is an isometric embedding, the unitary-normalised FFT an isometry, taking the
real part and cropping contractions). `certificate.certify` freezes W for its duration
(`frozen_weights`): the logits and the bound use the very same float32 matrices. The body
bound is the product over layers (1 / std for the normalisation; MaxMin and the pixel
unshuffle are 1-Lipschitz; a residual mix 0.5 + 0.5 L), and the margin of classes i, j is
compared with eps * L_body * ||w_j - w_i|| on the rows of the head actually used
(rgd.certified.certificate.gloro_radius), not the reference's sqrt(2).
"""
import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from rgd.certified import layers as L
from rgd.certified import lipschitz
from rgd.errors import ConfigError

PKG = "rgd.certified"
NEWTON_ITERATIONS = 10       # lot_ortho_conv.py :15-16, iter_T = eval_iter_T = 10
RIDGE = 1e-4                 # lot_ortho_conv.py :56-57, S + 1e-4 I and ||S||_F + 1e-4
RESIDUAL_MIX = 0.5           # lip_convnets.py :99-110, sigmoid(res_lamda_logit = 0), fixed


def pixel_unshuffle(x, s):
  """[B, H, W, C] -> [B, H/s, W/s, C s^2] with channel c * s^2 + k1 * s + k2 holding pixel
  (s i + k1, s j + k2) of channel c (einops "b c (w k1) (h k2) -> b (c k1 k2) w h"; TF's
  space_to_depth orders (k1, k2, c) instead). A permutation: orthogonal."""
  b, h, w, c = tf.unstack(tf.shape(x))
  y = tf.reshape(x, [b, h // s, s, w // s, s, c])
  y = tf.transpose(y, [0, 1, 3, 5, 2, 4])
  return tf.reshape(y, [b, h // s, w // s, c * s * s])


def kernel_spectrum(kernel, n):
  """The [n^2, cout, cin] complex64 per-frequency matrices of a [k, k, cin, cout] kernel on an
  n x n (padded) image, centred as the reference (`fft_shift_matrix`, s = -(k - 1) // 2)."""
  k = int(kernel.shape[0])
  cout, cin = int(kernel.shape[3]), int(kernel.shape[2])
  v = tf.transpose(tf.cast(kernel, tf.float32), [3, 2, 0, 1])              # [cout, cin, k, k]
  v = tf.pad(v, [[0, 0], [0, 0], [0, n - k], [0, n - k]])
  vhat = tf.math.conj(tf.signal.fft2d(tf.complex(v, tf.zeros_like(v))))
  s = (-(k - 1)) // 2          # python's floor division, as `-(K - 1) // 2` in the reference
  idx = np.arange(n)
  phase = 2.0 * np.pi * s * ((idx[:, None] + idx[None, :]) % n) / n
  shift = tf.constant(np.exp(1j * phase).astype(np.complex64))
  vhat = vhat * shift
  return tf.transpose(tf.reshape(vhat, [cout, cin, n * n]), [2, 0, 1])


def orthogonalize(vhat, iterations=NEWTON_ITERATIONS):
  """W = (V V^H + 1e-4 I)^{-1/2} V per frequency by coupled Newton-Schulz (module docstring);
  vhat [F, cout, cin] complex64."""
  cout = int(vhat.shape[1])
  eye = tf.eye(cout, dtype=vhat.dtype)[None]
  s = tf.matmul(vhat, vhat, adjoint_b=True) + RIDGE * eye
  # ||S||_F (torch `norm(p=None, dim=(1, 2))`), real, plus 1e-4.
  norm = tf.sqrt(tf.reduce_sum(tf.square(tf.abs(s)), axis=[1, 2], keepdims=True)) + RIDGE
  norm = tf.complex(norm, tf.zeros_like(norm))
  y, z = s / norm, tf.broadcast_to(eye, tf.shape(s))
  for _ in range(iterations):
    t = 0.5 * (3.0 * eye - tf.matmul(z, y))
    y, z = tf.matmul(y, t), tf.matmul(t, z)
  return tf.matmul(z, vhat) / tf.sqrt(norm)


def ortho_spectrum(kernel, n, iterations=NEWTON_ITERATIONS):
  """The realised per-frequency matrices W(f) [n^2, cout, cin] of a LOT kernel: what the
  forward pass multiplies with and what the certified bound is computed from."""
  return orthogonalize(kernel_spectrum(kernel, n), iterations)


def lot_conv(x, kernel, iterations=NEWTON_ITERATIONS, spectrum=None):
  """The stride-1 LOT conv of x [B, H, W, cin] (H == W), no bias, in float32; `spectrum`: W(f)
  already computed (`frozen_weights`), else from `kernel`."""
  k = int(kernel.shape[0])
  p = k // 2
  x = tf.cast(x, tf.float32)
  if p:
    x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
  n = int(x.shape[1])
  cout = int(kernel.shape[3])
  b = tf.shape(x)[0]
  w = (ortho_spectrum(kernel, n, iterations) if spectrum is None
       else tf.constant(spectrum))                                           # [F, cout, cin]
  xc = tf.transpose(x, [0, 3, 1, 2])                                         # [B, cin, n, n]
  xhat = tf.signal.fft2d(tf.complex(xc, tf.zeros_like(xc)))
  xhat = tf.transpose(tf.reshape(xhat, [b, -1, n * n]), [2, 1, 0])           # [F, cin, B]
  zhat = tf.matmul(w, xhat)                                                  # [F, cout, B]
  zhat = tf.transpose(tf.reshape(zhat, [n, n, cout, b]), [3, 2, 0, 1])
  z = tf.math.real(tf.signal.ifft2d(zhat))                                   # [B, cout, n, n]
  z = tf.transpose(z, [0, 2, 3, 1])
  if p:
    z = z[:, p:n - p, p:n - p, :]
  return z


def spectral_bound(w):
  """max_f sigma_max(W(f)) of w [F, cout, cin], times (1 + BOUND_SAFETY): the square root of
  the largest eigenvalue of the smaller Gram matrix W W^H or W^H W, formed and diagonalised in
  float64 (complex128). Its rounding, about 1e-16 relative times the dimension, is far inside
  the safety factor; eigvalsh is several times faster than an SVD on the 512 x 1024 frequency
  matrices of LOT-S."""
  w = np.asarray(w).astype(np.complex128)
  wh = np.conj(np.swapaxes(w, 1, 2))
  gram = w @ wh if w.shape[1] <= w.shape[2] else wh @ w
  top = float(np.linalg.eigvalsh(gram)[:, -1].max())
  return math.sqrt(max(top, 0.0)) * (1 + lipschitz.BOUND_SAFETY)


def _torch_default(fan_in):
  # torch Conv2d / Linear reset_parameters: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)),
  # bias U(+-1/sqrt(fan_in)); VarianceScaling(1/3, fan_in, uniform) has limit sqrt(1/fan_in).
  del fan_in
  return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


@keras.saving.register_keras_serializable(package=PKG)
class LOTConv2D(keras.layers.Layer):
  """A LOT convolution (module docstring), computed in float32. `strides` 1 or 2 (2: pixel
  unshuffle first). `residual`: the reference's hidden residual block, 0.5 x + 0.5
  MaxMin(conv(x)) (needs stride 1 and filters == channels). Square input images only."""

  def __init__(self, filters, kernel_size=3, strides=1, use_bias=True,
               iterations=NEWTON_ITERATIONS, residual=False, **kwargs):
    kwargs["dtype"] = "float32"   # README: "LOT does not support O2 ... high float precision"
    super().__init__(**kwargs)
    self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
    self.use_bias, self.iterations, self.residual = bool(use_bias), int(iterations), bool(residual)
    if self.strides not in (1, 2):
      raise ConfigError(f"LOTConv2D {self.name}: strides must be 1 or 2, got {strides}")
    if self.kernel_size % 2 != 1:
      raise ConfigError(f"LOTConv2D {self.name}: odd kernel sizes only, got {kernel_size}")
    self.frozen = None   # W(f) fixed by `frozen_weights` (numpy complex64), else None

  def build(self, input_shape):
    h, w, c = int(input_shape[1]), int(input_shape[2]), int(input_shape[3])
    if h != w or h % self.strides:
      raise ConfigError(f"LOTConv2D {self.name}: needs square inputs divisible by the stride, "
                        f"got {h}x{w}")
    self.input_hw = (h, w)
    cin = c * self.strides ** 2
    if self.residual and (self.strides != 1 or self.filters != c):
      raise ConfigError(f"LOTConv2D {self.name}: a residual block keeps shape (stride 1, "
                        f"{c} filters)")
    k = self.kernel_size
    square = cin == self.filters
    if square:  # lot_ortho_conv.py :20-27: identity init, zero bias
      init = np.zeros((k, k, cin, cin), np.float32)
      init[k // 2, k // 2] = np.eye(cin)
      kernel_init = keras.initializers.Constant(init)
    else:
      kernel_init = _torch_default(cin * k * k)
    self.kernel = self.add_weight(name="kernel", shape=(k, k, cin, self.filters),
                                  initializer=kernel_init)
    if self.use_bias:
      bias_init = "zeros" if square else keras.initializers.RandomUniform(
          -1 / math.sqrt(cin * k * k), 1 / math.sqrt(cin * k * k))
      self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=bias_init)
    else:
      self.bias = None

  def padded_size(self):
    """n: the side of the image the FFT runs over."""
    return self.input_hw[0] // self.strides + 2 * (self.kernel_size // 2)

  def conv(self, x):
    x = tf.cast(x, tf.float32)
    if self.strides > 1:
      x = pixel_unshuffle(x, self.strides)
    y = lot_conv(x, self.kernel, self.iterations, self.frozen)
    if self.bias is not None:
      y = y + self.bias
    return y

  def call(self, x):
    y = self.conv(x)
    if self.residual:
      a, b = tf.split(y, 2, axis=-1)
      y = tf.concat([tf.maximum(a, b), tf.minimum(a, b)], axis=-1)
      y = RESIDUAL_MIX * tf.cast(x, tf.float32) + (1 - RESIDUAL_MIX) * y
    return y

  def compute_output_shape(self, input_shape):
    s = self.strides
    h = None if input_shape[1] is None else input_shape[1] // s
    w = None if input_shape[2] is None else input_shape[2] // s
    return (input_shape[0], h, w, self.filters)

  def realised_spectrum(self):
    """W(f) as the forward pass uses it (float32, complex64 numpy): the frozen one inside
    `frozen_weights`, else computed from the kernel by the forward pass's own function."""
    if self.frozen is not None:
      return self.frozen
    return ortho_spectrum(self.kernel, self.padded_size(), self.iterations).numpy()

  def certified_lipschitz(self):
    """Certified L2 bound of the layer (module docstring): max_f sigma_max(W(f)), or for a
    residual block 0.5 + 0.5 of it (MaxMin is 1-Lipschitz)."""
    conv = spectral_bound(self.realised_spectrum())
    if not self.residual:
      return conv
    return (RESIDUAL_MIX + (1 - RESIDUAL_MIX) * conv) * (1 + lipschitz.BOUND_SAFETY)

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size,
                strides=self.strides, use_bias=self.use_bias, iterations=self.iterations,
                residual=self.residual)


@keras.saving.register_keras_serializable(package=PKG)
class LOTHead(keras.layers.Layer):
  """The last layer: logits = x W^T + b. Without `lln`, W is the LOT-orthogonalised [K, d]
  matrix (the reference's LOT 1x1 conv on the 1 x 1 x d features: its FFT is the identity,
  so W is real); with `lln`, each class row is divided by its norm (`NormalizedLinear`).
  `head_kernel()` is the [d, K] kernel actually used (rgd.certified.certificate)."""

  def __init__(self, num_classes, lln=False, iterations=NEWTON_ITERATIONS, **kwargs):
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self.num_classes, self.lln, self.iterations = int(num_classes), bool(lln), int(iterations)
    self.frozen = None   # the [d, K] kernel fixed by `frozen_weights`, else None

  def build(self, input_shape):
    d = int(input_shape[-1])
    self.kernel = self.add_weight(name="kernel", shape=(d, self.num_classes),
                                  initializer=_torch_default(d))
    self.bias = self.add_weight(name="bias", shape=(self.num_classes,),
                                initializer=keras.initializers.RandomUniform(
                                    -1 / math.sqrt(d), 1 / math.sqrt(d)))

  def head_kernel(self):
    if self.frozen is not None:
      return tf.constant(self.frozen)
    k = tf.cast(self.kernel, tf.float32)
    if self.lln:
      return k / tf.norm(k, axis=0, keepdims=True)
    w = ortho_spectrum(k[None, None], 1, self.iterations)[0]                 # [K, d]
    return tf.transpose(tf.math.real(w))

  def call(self, x):
    return tf.matmul(tf.cast(x, tf.float32), self.head_kernel()) + self.bias

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def get_config(self):
    return dict(super().get_config(), num_classes=self.num_classes, lln=self.lln,
                iterations=self.iterations)


# ------------------------------------------------------------------------------------------
# Model-level: what certifies a LOT model.

ONE_LIPSCHITZ = (L.MinMax, keras.layers.Flatten, keras.layers.InputLayer)


@contextlib.contextmanager
def frozen_weights(model):
  """Within the block every LOT layer of `model` multiplies with W computed once, here (like
  the reference's `use_cached_w`, lot_ortho_conv.py :49-50, but in float32), so that the
  certified bounds (`certified_lipschitz`, `head_kernel`) are computed from exactly the numbers
  the logits were computed with, and W is not recomputed for every batch. A no-op for models
  without LOT layers. A tf.function traced inside the block keeps the frozen W as a constant
  (no gradient reaches the kernels): for evaluation only."""
  layers = [l for l in model.layers if isinstance(l, (LOTConv2D, LOTHead))]
  try:
    for layer in layers:
      if isinstance(layer, LOTConv2D):
        layer.frozen = layer.realised_spectrum()
      else:
        layer.frozen = layer.head_kernel().numpy()
    yield model
  finally:
    for layer in layers:
      layer.frozen = None


def is_lot_model(model):
  return any(isinstance(l, (LOTConv2D, LOTHead)) for l in model.layers)


def split_lot_model(model):
  """(body layers with a bound, head); refuses a layer without a known L2 Lipschitz constant."""
  return lipschitz.split_body_and_head(model, LOTHead, (LOTConv2D, L.InputNormalize),
                                       ONE_LIPSCHITZ, "LOT")


def layer_bound(layer):
  if isinstance(layer, L.InputNormalize):
    return (1.0 / layer.std) * (1 + lipschitz.BOUND_SAFETY)   # (x - mean) / std
  return layer.certified_lipschitz()


def certified_body_lipschitz(model):
  """Certified upper bound on the body's L2 Lipschitz constant (float64)."""
  body, _ = split_lot_model(model)
  return lipschitz.product([layer_bound(l) for l in body])


def nominal_body_lipschitz(model):
  """The reference's L = 1 / max(std) (`train_robust.py` :165): the body's constant if every
  LOT layer were exactly orthogonal. For the training loss only, never for a certificate."""
  body, _ = split_lot_model(model)
  stds = [l.std for l in body if isinstance(l, L.InputNormalize)]
  return 1.0 / stds[0] if stds else 1.0


def certificate_regularizer_radius(logits, labels, head_kernel, body_lipschitz, lln):
  """The reference's training-time certificate of the *label* (`utils.py` :188-218): with
  `lln`, min_{j != y} (y_y - y_j) / (||w_y - w_j|| L) (`lln_certificates`); else
  (y_y - max_{j != y} y_j) / (sqrt(2) L) (`ortho_certificates`, orthonormal rows assumed).
  Float32, differentiable; it steers training and certifies nothing."""
  logits = tf.cast(logits, tf.float32)
  k = tf.shape(logits)[1]
  onehot = tf.one_hot(labels, k, dtype=tf.float32)
  top = tf.reduce_sum(logits * onehot, axis=1)
  if lln:
    w = tf.transpose(tf.cast(head_kernel, tf.float32))                     # [K, d]
    diff = tf.gather(w, labels)[:, None, :] - w[None]                      # [B, K, d]
    sq = tf.reduce_sum(tf.square(diff), axis=-1)
    # + onehot as the reference (`lln_weight_diff_norm + onehot`): no 0 / 0 for j = y.
    dist = tf.sqrt(tf.where(sq > 0, sq, 1.0)) * tf.cast(sq > 0, tf.float32) + onehot
    radius = (top[:, None] - (logits - onehot * 1e6)) / (dist * body_lipschitz)
    return tf.reduce_min(radius, axis=1)
  runner_up = tf.reduce_max(logits - onehot * 1e6, axis=1)
  return (top - runner_up) / (math.sqrt(2.0) * body_lipschitz)
