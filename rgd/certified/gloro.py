"""GloRo (Leino et al. 2021, "Globally-Robust Neural Networks") for L2: the bound, y_bot, losses,
and the eps schedule.

    L_body = prod_l ||layer_l||_2                     product bound over the body
    K_ij   = L_body * ||w_j - w_i||_2                  the margin y_j - y_i's constant
    y_bot  = max_{i != j} (y_i + eps * K_ij),          j the predicted class

(klasleino/gloro `gloro/models/gloronet.py`, `GloroNet.sub_lipschitz`, `_K_ij`, `call`.) A point
is eps-robust when y_j > y_bot; rgd.certified.certificate makes that sound in floating point.

Losses (`loss=`):
  'margin'   CE(y + eps * K_{y,i}, y) with K taken w.r.t. the *label* y: the loss that
             Hu et al.'s LiResNet code trains CIFAR-10 with (gloro snapshot hu23,
             `models/margin_layer.py`, `margin_layer_v2`; `configs/cifar10.yaml` has
             `trades_loss: False`). Default: seed 004 trained GloroNet with that code.
  'gloro_ce' CE on [y, y_bot] with the bottom class as a never-correct K+1-th class (gloro
             `training/losses.py`, `Crossentropy` with `add_extra_column`).
  'trades'   CE(y, label) + lam * KL(softmax([y, 0]) || softmax([y, y_bot])) (gloro
             `training/losses.py`, `Trades`: the robust term uses the prediction as target).

Schedule: eps_t = eps * (min_ratio + (max_ratio - min_ratio) * min(2 t / T, 1)): the training
eps grows from 0.1 eps to 1.5 eps over the first half of training (hu23 `train.py`, `eps_fn`,
with `configs/cifar10.yaml` min_eps 0.1, max_eps 1.5); certification uses eps itself.
"""
import keras
import tensorflow as tf

from rgd.certified import layers as L
from rgd.certified import lipschitz
from rgd.errors import ConfigError

LOSSES = ("margin", "gloro_ce", "trades")
ONE_LIPSCHITZ = (L.MinMax, L.Center, keras.layers.Flatten, keras.layers.InputLayer)


def split_gloro_model(model):
  """(body Lipschitz layers, head); refuses a layer without a known Lipschitz constant."""
  return lipschitz.split_body_and_head(model, L.GloroHead, L.LipschitzLayer, ONE_LIPSCHITZ,
                                       "GloRo")


def is_gloro_model(model):
  return any(isinstance(l, L.GloroHead) for l in model.layers)


def power_body_lipschitz(model, iterations=10, update=True):
  """Training estimate of L_body (a tf scalar, differentiable in the weights)."""
  body, _ = split_gloro_model(model)
  out = tf.constant(1.0)
  for layer in body:
    out = out * layer.power_lipschitz(iterations, update)
  return out


_REFRESH_FNS = {}


def refresh_power_iterates(model, tolerance=1e-5, max_iterations=500, chunk=50):
  """Runs every layer's power iteration until its estimate changes by less than `tolerance`
  (relative) over `chunk` iterations, as gloro `run_lc_to_convergence` / LiResNet's 500
  iterations before validation. Returns the converged estimate of L_body (a float)."""
  body, _ = split_gloro_model(model)
  total = 1.0
  for layer in body:
    fn = _REFRESH_FNS.get(id(layer))
    if fn is None:  # one traced function per layer, reused by later refreshes
      fn = _REFRESH_FNS[id(layer)] = tf.function(lambda l=layer: l.power_lipschitz(chunk))
    prev = cur = float(layer.power_lipschitz(1))
    for _ in range(max_iterations // chunk):
      cur = float(fn())
      if abs(cur - prev) <= tolerance * max(cur, 1e-12):
        break
      prev = cur
    total *= cur
  return total


def certified_body_lipschitz(model):
  """Certified upper bound on L_body (float64; rgd.certified.lipschitz)."""
  body, _ = split_gloro_model(model)
  return lipschitz.product([layer.certified_lipschitz() for layer in body])


def pairwise_constants(head_kernel, classes):
  """||w_j - w_i||_2 for j = classes [B] and every i: [B, K]."""
  w = tf.transpose(tf.cast(head_kernel, tf.float32))          # [K, d]
  diff = tf.gather(w, classes)[:, None, :] - w[None]          # [B, K, d]
  sq = tf.reduce_sum(tf.square(diff), axis=-1)
  # ||0|| for i = j: tf.norm's gradient there is NaN, so take the root only where sq > 0.
  return tf.where(sq > 0, tf.sqrt(tf.where(sq > 0, sq, 1.0)), 0.0)


def bottom_logit(logits, head_kernel, body_lipschitz, eps, classes=None):
  """y_bot [B] for the predicted class (or `classes`), and that class."""
  logits = tf.cast(logits, tf.float32)
  if classes is None:
    classes = tf.argmax(logits, axis=1, output_type=tf.int32)
  k = body_lipschitz * pairwise_constants(head_kernel, classes)
  others = tf.one_hot(classes, tf.shape(logits)[1], on_value=False, off_value=True)
  y_bot = tf.reduce_max(tf.where(others, logits + eps * k, -float("inf")), axis=1)
  return y_bot, classes


def eps_schedule(step, total_steps, eps, min_ratio=0.1, max_ratio=1.5):
  """Training eps at `step` (hu23 `train.py`, `eps_fn`; per step instead of per epoch)."""
  t = tf.cast(step, tf.float32) / max(float(total_steps), 1.0)
  ratio = min_ratio + (max_ratio - min_ratio) * tf.minimum(2.0 * t, 1.0)
  return eps * ratio


def gloro_loss(kind, logits, soft_labels, head_kernel, body_lipschitz, eps, lam=1.0):
  """Per-example (total, parts dict, logits with the bottom column [B, K+1])."""
  logits = tf.cast(logits, tf.float32)
  soft_labels = tf.cast(soft_labels, tf.float32)
  labels = tf.argmax(soft_labels, axis=1, output_type=tf.int32)
  y_bot, _ = bottom_logit(logits, head_kernel, body_lipschitz, eps)
  with_bot = tf.concat([logits, y_bot[:, None]], axis=1)
  zero = tf.zeros_like(soft_labels[:, :1])
  ce = tf.nn.softmax_cross_entropy_with_logits(soft_labels, logits)
  if kind == "margin":
    k = body_lipschitz * pairwise_constants(head_kernel, labels)
    total = tf.nn.softmax_cross_entropy_with_logits(soft_labels, logits + eps * k)
    return total, {"ce": ce}, with_bot
  if kind == "gloro_ce":
    total = tf.nn.softmax_cross_entropy_with_logits(tf.concat([soft_labels, zero], 1), with_bot)
    return total, {"ce": ce}, with_bot
  if kind == "trades":
    target = tf.stop_gradient(tf.concat([tf.nn.softmax(logits), zero], 1))
    log_q = tf.nn.log_softmax(with_bot)
    kl = tf.reduce_sum(target * (tf.math.log(tf.maximum(target, 1e-30)) - log_q), axis=1)
    return ce + lam * kl, {"ce": ce, "kl": kl}, with_bot
  raise ConfigError(f"Unknown GloRo loss {kind!r}; expected one of {LOSSES}")
