"""Interval bounds of l_inf-dist Nets and SortNets: the references' own certificate.

zbh2047/L_inf-dist-net-v2 and zbh2047/SortNet (`ell_inf_models.py`, `MLPModel.forward` /
`SortMLPModel.forward` with `up`, `down`) certify a point at eps by propagating the box
[max(x - eps, 0), min(x + eps, 1)] through the inference network (`core/norm_dist.py`,
`bound_inf_dist`, `bound_sort_neuron`): a coordinate with input in [l, u] has
|x - w| in [max(0, l - w, w - u), max(w - l, u - w)]; the l_inf distance (a max) and the sort
neuron (a non-negative combination of order statistics) are non-decreasing in every |x_i - w_i|,
so each output lies between the same function of the lower and of the upper ends. The point
certifies when the predicted class's worst logit beats every other class's best logit.

Every output interval contains [d(x) - eps, d(x) + eps] at most, so this never certifies less
than the Lipschitz margin/2 certificate; the [0, 1] clip makes it certify more near the
pixel range's ends (and at deeper layers the intervals are often narrower than 2 eps).

The bounds are computed in float32 and widened outwards after every layer by `PAD` times the
largest magnitude that entered it (32 ulps: ten-term sort sums and the mean-shift subtraction
round at most that much), so they enclose the exact values; the final comparison keeps
rgd.certified.certificate's float32 allowance between the computed and the deployed logits.
"""
import keras
import numpy as np
import tensorflow as tf

from rgd.certified import layers as L, precision
from rgd.errors import ConfigError

PAD = 2.0 ** -19
MAX_ELEMENTS = 2 ** 25     # [B, d, n] float32 elements per chunk (128 MiB)


def _dist_bounds(layer, lo, hi):
  w = tf.cast(layer.weight, tf.float32)[None]                      # [1, d, n]
  a = w - lo[:, :, None]
  b = hi[:, :, None] - w
  upper = tf.maximum(a, b)                                         # max |x - w| over the box
  lower = tf.maximum(tf.maximum(-a, -b), 0.0)                      # min |x - w| over the box
  if layer.sort_q is None:
    return tf.reduce_max(lower, axis=1), tf.reduce_max(upper, axis=1)
  t = min(layer.sort_truncate, layer.weight.shape[0])
  c = L.sort_coefficients(layer.sort_q, t)
  top = lambda z: tf.linalg.matvec(tf.math.top_k(tf.transpose(z, [0, 2, 1]), k=t).values,
                                   tf.constant(c, tf.float32))
  return top(lower), top(upper)


def _layer_bounds(layer, lo, hi):
  """Bounds of one inference layer's output on the box [lo, hi], widened outwards."""
  if isinstance(layer, keras.layers.InputLayer):
    return lo, hi
  if isinstance(layer, keras.layers.Flatten):
    return tf.reshape(lo, [tf.shape(lo)[0], -1]), tf.reshape(hi, [tf.shape(hi)[0], -1])
  if isinstance(layer, L.InputNormalize):
    lo, hi = layer(lo), layer(hi)                                  # increasing: 1 / std > 0
    size = tf.maximum(tf.abs(lo), tf.abs(hi)) + abs(layer.mean_max / layer.std)
    return lo - PAD * size, hi + PAD * size
  if isinstance(layer, L.LinfDist):
    dlo, dhi = _dist_bounds(layer, lo, hi)
    size = dhi
    shift = tf.zeros_like(dlo[0])
    if layer.mean_shift:
      shift = shift - layer.running_mean
    if layer.bias is not None:
      shift = shift + layer.bias
    size = size + tf.abs(shift)
    return dlo + shift - PAD * size, dhi + shift + PAD * size
  raise ConfigError(f"interval bounds: no rule for layer {layer.name} ({type(layer).__name__})")


def distance_bounds(model, lo, hi):
  """[B, K] lower and upper bounds of the pre-scale outputs y (logits = -s * y) on the boxes."""
  lo, hi = tf.convert_to_tensor(lo, tf.float32), tf.convert_to_tensor(hi, tf.float32)
  for layer in model.layers:
    if isinstance(layer, L.LogitScale):
      break
    lo, hi = _layer_bounds(layer, lo, hi)
  return lo.numpy(), hi.numpy()


def _chunk(model):
  widest = max([int(l.weight.shape[0]) * int(l.weight.shape[1])
                for l in model.layers if isinstance(l, L.LinfDist)] or [1])
  return max(1, MAX_ELEMENTS // widest)


def certified_at(model, images, predictions, eps, scale, tolerance):
  """Boolean per example: the prediction provably stays within the Linf ball of radius eps
  (in [0, 1] pixel units, a scalar or one per example) intersected with [0, 1]^d."""
  images = np.asarray(images, np.float32)
  eps = np.broadcast_to(np.asarray(eps, np.float32), (len(images),))
  e = eps.reshape((-1,) + (1,) * (images.ndim - 1))
  out = np.zeros(len(images), bool)
  step = _chunk(model)
  with precision.exact_float32():          # the sort neuron's weighted sum is a matvec
    for i in range(0, len(images), step):
      x, r = images[i:i + step], e[i:i + step]
      # One ulp outwards: x - r and x + r round, the box must contain the true one.
      lo = np.maximum(np.nextafter(x - r, np.float32(-np.inf)), 0.0)
      hi = np.minimum(np.nextafter(x + r, np.float32(np.inf)), 1.0)
      lo, hi = distance_bounds(model, lo, hi)
      out[i:i + step] = _beats(lo, hi, predictions[i:i + step], scale, tolerance[i:i + step])
  return out


def _beats(lo, hi, pred, scale, tol):
  """logits = -s * y: with s > 0 the worst logit of j is -s * hi_j, the best of k is -s * lo_k."""
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  if scale < 0:
    lo, hi = -hi, -lo
  s = abs(float(scale))
  rows = np.arange(len(pred))
  worst = -s * hi[rows, pred]
  best = -s * lo
  best[rows, pred] = -np.inf
  return worst - best.max(axis=1) > tol


def radius(model, images, predictions, scale, tolerance, start, steps=12, top=1.0):
  """Certified radius per example by bisection on eps (the certificate is monotone in eps: a
  larger box gives wider intervals). `start`: a radius already certified (margin/2); examples
  with start < 0 are not certified even at eps = 0 and keep it. Returns the largest eps found
  certified (a lower bound within (top - start) / 2^steps of the interval radius); inf when
  the whole [0, 1]^d box certifies."""
  start = np.asarray(start, np.float64)
  if steps <= 0:
    return start
  lo = np.maximum(start, 0.0)
  hi = np.full_like(lo, top)
  live = start >= 0
  result = np.where(live, lo, start)
  if not live.any():
    return result
  idx = np.flatnonzero(live)
  whole = certified_at(model, images[idx], predictions[idx], top, scale, tolerance[idx])
  result[idx[whole]] = np.inf
  idx = idx[~whole]
  for _ in range(steps):
    if not len(idx):
      break
    # The float32 eps actually tested is the one recorded.
    mid = ((lo[idx] + hi[idx]) / 2).astype(np.float32).astype(np.float64)
    ok = certified_at(model, images[idx], predictions[idx], mid, scale, tolerance[idx])
    lo[idx] = np.where(ok, mid, lo[idx])
    hi[idx] = np.where(ok, hi[idx], mid)
  result[live & np.isfinite(result)] = lo[live & np.isfinite(result)]
  return result
