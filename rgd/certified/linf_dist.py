"""Training of the l_inf-dist Net (Zhang et al. 2021/2022) and SortNet (Zhang et al. 2022):
p-norm annealing and the mixture loss, as zbh2047/L_inf-dist-net-v2 `main.py`
(`create_schedule`, class `mixture`).

* p_t = p_start * (p_end / p_start)^r, r the progress between fractions `p_anneal` of training;
  after the end (p_end >= 100) p = inf. The reference command for CIFAR-10 8/255
  (`command/cifar_0.03137.sh`: `--p-start 8 --p-end 1000 --epochs 0,0,100,1250,1300`) anneals
  from epoch 100 to 1250 of 1300: fractions (0.077, 0.962).
* Every output of the net (inference, p = inf) moves by at most ||delta||_inf, so with
  z = -y the pre-scale logits, the worst case of z_i - z_y within eps_train is
  z_i - z_y + 2 eps_train. The loss is
      mean_b max_{i != y} clip((z_i - z_y + 2 eps) / (2 eps), 0, 1) + lam * CE(s * z, y)
  with lam decaying lam0 -> lam_end geometrically along the same progress r (`mixture`).
  eps_train = 3 * eps (0.09411 for 8/255 in the reference command).
"""
import math

import keras
import numpy as np
import tensorflow as tf

from rgd.certified import layers as L
from rgd.errors import ConfigError


def dist_layers(model):
  return [l for l in model.layers if isinstance(l, L.LinfDist)]


def logit_scale(model):
  for layer in model.layers:
    if isinstance(layer, L.LogitScale):
      return layer
  raise ConfigError(f"{model.name}: an l_inf-dist model must end in a LogitScale layer")


def input_std(model):
  """The scalar std of the model's InputNormalize layer (1 without one)."""
  stds = [l.std for l in model.layers if isinstance(l, L.InputNormalize)]
  return stds[0] if stds else 1.0


def is_linf_dist_model(model):
  return any(isinstance(l, L.LinfDist) for l in model.layers)


def check_linf_dist_model(model):
  """Refuses layers whose Linf Lipschitz constant is unknown (soundness)."""
  for layer in model.layers:
    if not isinstance(layer, (L.LinfDist, L.LogitScale, L.InputNormalize, keras.layers.Flatten,
                              keras.layers.InputLayer)):
      raise ConfigError(f"{model.name}: layer {layer.name} ({type(layer).__name__}) is not known "
                        f"to be 1-Lipschitz in Linf")
  if not isinstance(model.layers[-1], L.LogitScale):
    raise ConfigError(f"{model.name}: must end in a LogitScale layer")


def progress(step, total_steps, start_frac, end_frac):
  t = tf.cast(step, tf.float32) / max(float(total_steps), 1.0)
  if end_frac <= start_frac:
    return tf.constant(1.0)
  return tf.clip_by_value((t - start_frac) / (end_frac - start_frac), 0.0, 1.0)


def p_schedule(ratio, p_start=8.0, p_end=1000.0):
  p = p_start * tf.exp(math.log(p_end / p_start) * ratio)
  return tf.where(tf.logical_and(ratio >= 1.0, p_end >= 100.0), float("inf"), p)


def lam_schedule(ratio, lam0, lam_end):
  return lam0 * tf.exp(math.log(lam_end / lam0) * ratio)


def mixture_loss(logits, scale, soft_labels, eps_train, lam, clip=1.0):
  """Per-example (total, hinge, ce). `logits` = -s * y; z = logits / s."""
  logits = tf.cast(logits, tf.float32)
  z = logits / scale
  labels = tf.argmax(soft_labels, axis=1, output_type=tf.int32)
  z_y = tf.gather(z, labels, batch_dims=1)
  worst = (z - z_y[:, None] + 2.0 * eps_train) / (2.0 * eps_train)
  worst = tf.where(tf.one_hot(labels, tf.shape(z)[1]) > 0, 0.0, worst)
  hinge = tf.reduce_max(tf.clip_by_value(worst, 0.0, clip), axis=1)
  ce = tf.nn.softmax_cross_entropy_with_logits(tf.cast(soft_labels, tf.float32), logits)
  # Logits whose worst case within eps_train still predicts y (for the training metric).
  worst_logits = tf.where(tf.one_hot(labels, tf.shape(z)[1]) > 0, z - eps_train, z + eps_train)
  return hinge + lam * ce, hinge, ce, worst_logits


def recalibrate(model, images, batch_size=256):
  """Re-estimates every mean shift with the inference function (p = inf, sort neurons, no
  dropout) over `images` ([0, 1] pixels), as the references' `update_bn` before every test
  (SortNet `main.py`): one pass in which each layer is centred by its batch mean, and
  running_mean := the average of the batch means (the reference's momentum 1 / (batch + 1);
  here weighted by batch size, equal for equal batches). With one batch holding all images,
  each running mean is the exact mean of the certified network's unit over the data."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  sums, total = {}, 0
  for i in range(0, len(images), batch_size):
    x = tf.constant(images[i:i + batch_size], tf.float32)
    n = int(x.shape[0])
    for layer in model.layers:
      if isinstance(layer, keras.layers.InputLayer):
        continue
      if isinstance(layer, L.LogitScale):
        break
      if not isinstance(layer, L.LinfDist):
        x = layer(x)
        continue
      y = layer.inference_distance(x)
      if layer.mean_shift:
        mean = tf.reduce_mean(y, axis=0)
        sums[layer.name] = sums.get(layer.name, 0.0) + mean.numpy().astype(np.float64) * n
        y = y - mean
      x = y + layer.bias if layer.bias is not None else y
    total += n
  for layer in dist_layers(model):
    if layer.mean_shift and total:
      layer.running_mean.assign((sums[layer.name] / total).astype(np.float32))
