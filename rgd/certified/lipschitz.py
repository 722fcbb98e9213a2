"""Spectral norms (L2 Lipschitz constants) of dense and conv layers.

Two kinds of number, for two jobs:

* **Power iteration** (training, every step): `x <- A^T A x / ||A^T A x||`, `sigma ~ ||A x||`
  from a persistent, non-trainable iterate, a few iterations per step. As klasleino/gloro
  (`gloro/lc/strategies.py`, `PowerMethod.compute`: conv via `conv2d` then `conv2d_transpose`)
  and hukkai/liresnet (`models/layers/conv.py`, `Conv2d.lipschitz`: 10 iterations from a buffer
  `init_x`). It is differentiable in the kernel through the last `||A x||` (the iterate itself
  is a stop-gradient), which is what the GloRo loss trains against. Power iteration *under*-
  estimates sigma (||A x|| <= sigma for any unit x), so it is never used to certify.

* **Certified upper bounds** (certification, validation, export): computed in float64 numpy.
  Dense: the largest singular value by SVD. Conv: the exact spectral norm of the *circular*
  convolution on a large enough torus (Sedghi, Gupta & Long 2019, "The singular values of
  convolutional layers"): a zero-padded conv of an n x n image equals P C E (zero-embedding E,
  circular conv C on an N x N torus with N >= out + k - 1 so nothing wraps, restriction P), so
  ||conv|| <= ||C|| = max over the N^2 frequencies of sigma_max(K_hat(w)). A stride-s conv is
  first rewritten exactly as a stride-1 conv on the s x s polyphase components of its input
  (a permutation of pixels, an isometry), so strided stems and necks get a bound as well.
  The result is multiplied by (1 + BOUND_SAFETY) to cover the rounding of the SVD.
"""
import math

import numpy as np
import tensorflow as tf

from rgd.errors import ConfigError

# Relative safety factor on every certified bound: float64 SVD/FFT rounding is ~1e-15 relative;
# 1e-6 is far above it and far below anything that changes a certificate materially.
BOUND_SAFETY = 1e-6


# ------------------------------------------------------------------------------------------
# Power iteration (training-time estimate).


def _normalize(x):
  return x / tf.maximum(tf.norm(x), 1e-12)


def dense_power_iteration(kernel, u, iterations):
  """kernel [in, out] (y = x @ kernel), iterate u [in]. Returns (sigma_estimate, new_u)."""
  kernel = tf.cast(kernel, tf.float32)
  x = _normalize(tf.cast(u, tf.float32))
  for _ in range(iterations):
    x = tf.stop_gradient(_normalize(tf.linalg.matvec(kernel, tf.linalg.matvec(
        kernel, x, transpose_a=True))))
  return tf.norm(tf.linalg.matvec(kernel, x, transpose_a=True)), x


def conv_power_iteration(kernel, x, iterations, strides=1, padding="SAME"):
  """kernel [kh, kw, cin, cout], iterate x [1, H, W, cin]. Returns (sigma_estimate, new_x)."""
  kernel = tf.cast(kernel, tf.float32)
  x = _normalize(tf.cast(x, tf.float32))
  shape = tf.shape(x)
  for _ in range(iterations):
    y = tf.nn.conv2d(x, kernel, strides, padding)
    x = tf.stop_gradient(_normalize(tf.nn.conv2d_transpose(y, kernel, shape, strides, padding)))
  return tf.norm(tf.nn.conv2d(x, kernel, strides, padding)), x


# ------------------------------------------------------------------------------------------
# Certified upper bounds (float64 numpy).


def dense_spectral_bound(kernel):
  """sigma_max(kernel) by SVD, times (1 + BOUND_SAFETY)."""
  k = np.asarray(kernel, np.float64)
  return float(np.linalg.svd(k, compute_uv=False)[0]) * (1 + BOUND_SAFETY)


def conv_output_size(n, k, s, padding):
  return -(-n // s) if padding.upper() == "SAME" else (n - k) // s + 1


def polyphase_kernel(kernel, stride):
  """The stride-1 kernel [ka, ka, s*s*cin, cout] acting on the s x s polyphase components of
  the input that equals the stride-s conv with `kernel` (u = a * s + r)."""
  k = np.asarray(kernel, np.float64)
  kh, kw, cin, cout = k.shape
  s = int(stride)
  ah, aw = -(-kh // s), -(-kw // s)
  padded = np.zeros((ah * s, aw * s, cin, cout))
  padded[:kh, :kw] = k
  p = padded.reshape(ah, s, aw, s, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  return p.reshape(ah, aw, s * s * cin, cout)


def conv_spectral_bound(kernel, input_hw, stride=1, padding="SAME"):
  """An upper bound on the spectral norm of the conv on inputs of size `input_hw` (see the
  module docstring), times (1 + BOUND_SAFETY)."""
  kh, kw = np.asarray(kernel).shape[:2]
  out_h = conv_output_size(int(input_hw[0]), kh, int(stride), padding)
  out_w = conv_output_size(int(input_hw[1]), kw, int(stride), padding)
  pk = polyphase_kernel(kernel, stride)
  if pk.shape[:2] == (1, 1):
    # A 1x1 polyphase kernel (e.g. the 4x4 stride-4 neck): the conv applies one matrix to
    # every (polyphase) pixel, so its norm is exactly that matrix's.
    return dense_spectral_bound(pk[0, 0])
  n_h, n_w = out_h + pk.shape[0], out_w + pk.shape[1]   # > out + ka - 1: no wrap-around
  # Real kernel: K_hat(-w) = conj(K_hat(w)) has the same singular values, so half the
  # frequencies (rfft) suffice.
  spectrum = np.fft.rfft2(pk, s=(n_h, n_w), axes=(0, 1))  # [n_h, n_w // 2 + 1, cin', cout]
  sv = np.linalg.svd(spectrum, compute_uv=False)
  return float(sv.max()) * (1 + BOUND_SAFETY)


def explicit_conv_matrix(kernel, input_shape, stride=1, padding="SAME"):
  """The conv as a dense matrix [H*W*cin, out] (tests; small inputs only)."""
  h, w, c = input_shape
  n = h * w * c
  basis = np.eye(n, dtype=np.float32).reshape(n, h, w, c)
  out = tf.nn.conv2d(basis, tf.constant(kernel, tf.float32), stride, padding.upper())
  return out.numpy().reshape(n, -1)


def product(values):
  """Product of per-layer bounds in float64 (log-sum to avoid overflow in deep nets)."""
  values = [float(v) for v in values]
  if any(v == 0 for v in values):
    return 0.0
  return math.exp(sum(math.log(v) for v in values))


def split_body_and_head(model, head_type, body_types, one_lipschitz, kind):
  """(body layers, head) of a certifiable `model`: the layers of `body_types`, which carry a
  certified Lipschitz bound, and its last layer, of `head_type`. Refuses any other layer that
  is not in `one_lipschitz`: unlike gloro's `for_layer` (which warns and uses 1.0), a silent 1.0
  would be unsound. `kind` names the model family in the errors."""
  body, head = [], None
  for layer in model.layers:
    if isinstance(layer, head_type):
      head = layer
    elif isinstance(layer, body_types):
      body.append(layer)
    elif not isinstance(layer, one_lipschitz):
      raise ConfigError(f"{model.name}: layer {layer.name} ({type(layer).__name__}) has no known "
                        f"Lipschitz constant; {kind} certification needs every layer to have one")
  if head is None or model.layers[-1] is not head:
    raise ConfigError(f"{model.name}: a {kind} model must end in a {head_type.__name__} layer")
  return body, head
