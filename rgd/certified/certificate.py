"""Sound certification, always in float32 or wider.

A point certifies at radius eps only if its top logit beats every other class's worst case by
more than a rounding margin:

    GloRo (L2):      y_j - y_i - tol > eps * K_ij              for all i != j
    LOT (L2):        the same, K_ij = L_body * ||w_j - w_i|| with L_body the product of the
                     LOT layers' bounds from their realised orthogonalised weights (rgd.certified.
                     lot) and w the head's rows as used (orthogonalised or LLN)
    l_inf-dist (Linf), linf_bound='interval' (default, the references' own certificate,
                     rgd.certified.interval): worst y_j - best y_i > tol over the box
                     [x - eps, x + eps] clipped to [0, 1]
    l_inf-dist (Linf), linf_bound='margin':
                     y_j - y_i - tol > 2 * |s| * eps / std      (each logit |s|/std-Lipschitz)

* The Lipschitz constants are certified upper bounds (rgd.certified.lipschitz: SVD / FFT in
  float64 with a safety factor), never the power-iteration estimate, which can only be low.
* tol = ROUNDING_RELATIVE[dtype] * (1 + 2 max_k |y_k|): float32 logits get 1e-5 relative (about
  170 ulps, for the rounding of the forward pass and of the bound); logits computed in bfloat16
  get 2^-6. The margins and K are computed in float64 from the float32 logits.
* Ties never certify: y_j - y_i = 0 for a tied class gives a negative radius.
* The model is evaluated in float32 even when it was trained under a bf16 policy
  (`float32_model`), and with TF32 and XLA auto-clustering off (rgd.certified.precision): on
  Ampere and newer GPUs TF32 would round float32 matmuls and convolutions to a 10-bit mantissa,
  fifty times the allowance. The settings in force are returned in `result['precision']`.

`certify(model, images, labels, radii=...)` returns per-example predictions and certified radii
and, for each of `radii`, the certified flags at exactly that radius; certified accuracy at eps
is mean(correct & certified at eps), from the flags when eps is one of `radii`, else from
radius > eps. (The interval radius is a bisection: a lower bound within 2^-12 of the pixel
range; the flags at `radii` are exact.)
"""
import keras
import numpy as np
import tensorflow as tf

from rgd.certified import gloro, interval, linf_dist, lot, precision
from rgd.errors import ConfigError

LINF_BOUNDS = ("interval", "margin")
ROUNDING_RELATIVE = {"float32": 1e-5, "bfloat16": 2.0 ** -6, "float16": 2.0 ** -9,
                     "float64": 1e-12}


def _float32_config(obj):
  if isinstance(obj, dict):
    if obj.get("class_name") == "DTypePolicy" or obj.get("class_name") == "DTypePolicyMap":
      return "float32"
    return {k: ("float32" if k == "dtype" and isinstance(v, str) and v != "float32"
                else _float32_config(v)) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_float32_config(v) for v in obj]
  return obj


def float32_model(model):
  """`model` itself if it computes in float32, else a float32 copy with the same weights."""
  if all(l.compute_dtype == "float32" for l in model.layers):
    return model
  config = _float32_config(model.get_config())
  clone = model.__class__.from_config(config)
  clone.set_weights(model.get_weights())
  return clone


def rounding_tolerance(logits, dtype="float32"):
  rel = ROUNDING_RELATIVE[str(dtype)]
  return rel * (1.0 + 2.0 * np.max(np.abs(logits), axis=1))


def gloro_radius(logits, head_kernel, body_lipschitz, dtype="float32"):
  """Certified L2 radius per example (float64 numpy; negative: not even the prediction is
  certain, e.g. a tie)."""
  y = np.asarray(logits, np.float64)
  w = np.asarray(head_kernel, np.float64).T                      # [K, d]
  j = np.argmax(y, axis=1)
  k = float(body_lipschitz) * np.linalg.norm(w[j][:, None, :] - w[None], axis=-1)  # [B, K]
  margin = y[np.arange(len(y)), j][:, None] - y - rounding_tolerance(y, dtype)[:, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    r = np.where(k > 0, margin / np.where(k > 0, k, 1.0),
                 np.where(margin > 0, np.inf, -np.inf))
  r[np.arange(len(y)), j] = np.inf
  return r.min(axis=1), j


def linf_radius(logits, scale, dtype="float32", input_std=1.0):
  """Certified Linf radius per example (margin/2): (top - second - tol) * std / (2 |s|)."""
  y = np.asarray(logits, np.float64)
  j = np.argmax(y, axis=1)
  top2 = np.sort(y, axis=1)[:, -2:]
  margin = top2[:, 1] - top2[:, 0] - rounding_tolerance(y, dtype)
  return margin * float(input_std) / (2.0 * abs(float(scale))), j


def certifiable_norm(model):
  """'l2' (GloRo, LOT) or 'linf' (l_inf-dist / SortNet): the threat model of a certifiable
  model, checked from its layers alone (no bound computed); a ConfigError for any other model."""
  if lot.is_lot_model(model):
    lot.split_lot_model(model)  # refuses a layer without a known Lipschitz constant
    return "l2"
  if gloro.is_gloro_model(model):
    gloro.split_gloro_model(model)  # refuses a layer without a known Lipschitz constant
    return "l2"
  if linf_dist.is_linf_dist_model(model):
    linf_dist.check_linf_dist_model(model)
    return "linf"
  raise ConfigError(f"{model.name} is not a certifiable model (GloRo, LOT or l_inf-dist)")


def lipschitz_info(model, refresh=True):
  """Threat model and constants of a certifiable model (float32 copy assumed)."""
  if lot.is_lot_model(model):
    _, head = lot.split_lot_model(model)
    return dict(kind="lot", norm="l2", body_lipschitz=lot.certified_body_lipschitz(model),
                head_kernel=keras.ops.convert_to_numpy(head.head_kernel()))
  if certifiable_norm(model) == "l2":
    _, head = gloro.split_gloro_model(model)
    power = gloro.refresh_power_iterates(model) if refresh else None
    bound = gloro.certified_body_lipschitz(model)
    return dict(kind="gloro", norm="l2", body_lipschitz=bound, power_iteration_estimate=power,
                head_kernel=keras.ops.convert_to_numpy(head.head_kernel()))
  return dict(kind="linf_dist", norm="linf",
              logit_scale=float(keras.ops.convert_to_numpy(linf_dist.logit_scale(model).value())),
              input_std=linf_dist.input_std(model))


def radii_from_logits(info, logits, dtype="float32"):
  if info["kind"] in ("gloro", "lot"):
    return gloro_radius(logits, info["head_kernel"], info["body_lipschitz"], dtype)
  return linf_radius(logits, info["logit_scale"], dtype, info["input_std"])


def certify(model, images, labels, batch_size=256, refresh=True, radii=(), linf_bound="interval",
            bisection_steps=12):
  """Returns dict(predictions, radius, correct, certified_at, logits, info, precision); images
  uint8 or float in [0, 1]. `linf_bound`: 'interval' or 'margin' (module docstring)."""
  if linf_bound not in LINF_BOUNDS:
    raise ConfigError(f"linf_bound={linf_bound!r}: expected one of {LINF_BOUNDS}")
  with precision.exact_float32() as settings:
    model = float32_model(model)
    with lot.frozen_weights(model):   # LOT: the bound and the logits from the same W
      info = lipschitz_info(model, refresh)
      images = np.asarray(images)
      if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
      images = images.astype(np.float32)
      logits = _logits(model, images, batch_size)
    radius, pred = radii_from_logits(info, logits)
    flags = {float(r): radius > r for r in radii}
    if info["kind"] == "linf_dist" and linf_bound == "interval" and len(images):
      tol = rounding_tolerance(logits)
      radius = interval.radius(model, images, pred, info["logit_scale"], tol, radius,
                               bisection_steps)
      flags = {float(r): (radius > r) | interval.certified_at(model, images, pred, r,
                                                              info["logit_scale"], tol)
               for r in radii}
  info["linf_bound"] = linf_bound if info["kind"] == "linf_dist" else None
  labels = np.asarray(labels).astype(np.int64)
  return dict(predictions=pred, radius=radius, correct=pred == labels, certified_at=flags,
              logits=logits, info=info, precision=settings)


def _logits(model, images, batch_size):
  if not len(images):
    return np.zeros((0, 1), np.float32)
  return np.concatenate([
      tf.cast(model(tf.constant(images[i:i + batch_size]), training=False), tf.float32).numpy()
      for i in range(0, len(images), batch_size)])


def certified_accuracy(result, eps):
  flags = result.get("certified_at", {}).get(float(eps))
  if flags is None:
    flags = result["radius"] > eps
  return float(np.mean(result["correct"] & flags))
