"""EDM preconditioning, noise distribution and loss (Karras et al. 2022, Table 1, "Ours").

Follows NVlabs/edm `training/networks.py` EDMPrecond.forward and `training/loss.py` EDMLoss:

    c_skip = sd^2 / (s^2 + sd^2)        c_out = s sd / sqrt(s^2 + sd^2)
    c_in   = 1 / sqrt(s^2 + sd^2)       c_noise = log(s) / 4
    ln s ~ N(P_mean, P_std^2)           lambda(s) = (s^2 + sd^2) / (s sd)^2

D(x; s) = c_skip x + c_out F(c_in x; c_noise). Images live in [-1, 1] inside the generator (as in
EDM); rgd's [0, 1] images are mapped at the boundary (`to_model_range` / `from_model_range`).
Preconditioning is computed in float32 whatever the Keras dtype policy (as EDMPrecond, which
casts only F's input to fp16 and its output back to fp32).
"""
import tensorflow as tf

from rgd.edm import unet

SIGMA_DATA = 0.5    # EDM Table 1: sigma_data = 0.5 for images in [-1, 1]
P_MEAN = -1.2       # EDM Table 1: training noise distribution ln(sigma) ~ N(-1.2, 1.2^2)
P_STD = 1.2


def to_model_range(images):
  return tf.cast(images, tf.float32) * 2.0 - 1.0


def from_model_range(x):
  return tf.clip_by_value((x + 1.0) / 2.0, 0.0, 1.0)


def preconditioning(sigma, sigma_data=SIGMA_DATA):
  """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for float32 `sigma` of any shape."""
  sigma = tf.cast(sigma, tf.float32)
  var = sigma ** 2 + sigma_data ** 2
  c_skip = sigma_data ** 2 / var
  c_out = sigma * sigma_data / tf.sqrt(var)
  c_in = 1.0 / tf.sqrt(var)
  c_noise = tf.math.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def loss_weight(sigma, sigma_data=SIGMA_DATA):
  """lambda(sigma) = 1 / c_out^2 (EDM Table 1), so the effective target of F has unit weight."""
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def sample_sigma(seed, batch, p_mean=P_MEAN, p_std=P_STD):
  """Training noise levels, log-normal (EDMLoss: exp(randn * P_std + P_mean)); stateless seed."""
  return tf.exp(tf.random.stateless_normal([batch], seed) * p_std + p_mean)


def make_denoiser(network, sigma_data=SIGMA_DATA):
  """D(x, sigma, labels, augment_labels=None) from a raw network F (EDMPrecond.forward).

  `labels` is a float [B, num_classes] one-hot (or zeros for the unconditional model used by
  classifier-free guidance). `augment_labels` feeds a network built with an augmentation input
  (rgd.edm.unet, augment_dim > 0); None gives it zeros, which is EDM's "no augmentation labels"
  (map_augment has no bias), as at sampling time. Output is float32 even if F runs under a
  bfloat16 policy.
  """
  augment_dim = unet.augment_dim_of(network)

  def denoise(x, sigma, labels, augment_labels=None, training=False):
    x = tf.cast(x, tf.float32)
    sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), tf.shape(x)[:1])
    c_skip, c_out, c_in, c_noise = preconditioning(sigma[:, None, None, None], sigma_data)
    inputs = [c_in * x, tf.reshape(c_noise, [-1]), tf.cast(labels, tf.float32)]
    if augment_dim:
      inputs.append(unet.zero_augment_labels(network, tf.shape(x)[0])
                    if augment_labels is None else tf.cast(augment_labels, tf.float32))
    f = network(inputs, training=training)
    return c_skip * x + c_out * tf.cast(f, tf.float32)
  return denoise


def edm_loss(denoise, images, labels, seed, p_mean=P_MEAN, p_std=P_STD,
             sigma_data=SIGMA_DATA, training=True, rows=None, augment_labels=None):
  """Per-example EDM loss, the SUM over pixels of lambda(s) |D(y + n; s) - y|^2 (EDMLoss returns
  the per-pixel loss and training_loop.py sums it: `loss.sum().mul(loss_scaling /
  batch_gpu_total)`; see `step_loss`).

  `images` are in [-1, 1] (already augmented, with their `augment_labels`, if at all); `seed` is
  a [2] int stateless seed (one for sigma, one for noise). `rows` = (start, global_batch): the
  noise is drawn for the global batch and these images take rows start.., so a step's noise
  does not depend on how many replicas share the batch.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  batch = tf.shape(images)[0]
  start, total = (0, batch) if rows is None else rows
  shape = tf.concat([[total], tf.shape(images)[1:]], 0)
  sigma = sample_sigma(seeds[0], total, p_mean, p_std)[start:start + batch]
  noise = tf.random.stateless_normal(shape, seeds[1])[start:start + batch]
  noise = noise * sigma[:, None, None, None]
  denoised = denoise(images + noise, sigma, labels, augment_labels=augment_labels,
                     training=training)
  weight = loss_weight(sigma, sigma_data)[:, None, None, None]
  return tf.reduce_sum(weight * tf.square(denoised - images), axis=[1, 2, 3])


def step_loss(per_example, global_batch, loss_scaling=1.0):
  """The loss a step differentiates: sum of the per-example (pixel-summed) losses *
  loss_scaling / global batch (training_loop.py: `loss.sum().mul(loss_scaling /
  batch_gpu_total)` on each of the batch_size / batch_gpu_total accumulation rounds, whose
  gradients add up to sum / batch_size). Summed over replicas by the optimizer's all-reduce."""
  return tf.reduce_sum(per_example) * (loss_scaling / global_batch)
