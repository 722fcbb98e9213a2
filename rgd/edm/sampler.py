"""EDM Heun sampler (Karras et al. 2022, Algorithm 2) and its time steps (Eq. 5).

Follows NVlabs/edm `generate.py` edm_sampler: sigma_min 0.002, sigma_max 80, rho 7, 18 steps;
the last step is Euler (sigma_N = 0), so 2 * 18 - 1 = 35 network evaluations. Optional churn
(S_churn, S_min, S_max, S_noise) as there. Runs in float32 whatever the Keras dtype policy
(EDM runs the sampler in float64; float32 suffices for 8-bit images, and TPUs have no float64).

Noise is stateless and keyed per image by `image_seeds` ([B, 2] ints), so an image depends only
on its own seed, never on the batch it is in or the device it runs on: the same global index
gives the same image whatever the number of workers or replicas.
"""
import math

import numpy as np
import tensorflow as tf

SIGMA_MIN = 0.002   # EDM Table 1 / generate.py defaults
SIGMA_MAX = 80.0
RHO = 7.0
NUM_STEPS = 18      # EDM CIFAR-10: 18 steps, 35 NFE


def time_steps(num_steps=NUM_STEPS, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
  """sigma_0 > ... > sigma_{N-1} = sigma_min, then sigma_N = 0 (EDM Eq. 5), as float64 numpy
  (Python constants in the graph)."""
  i = np.arange(num_steps, dtype=np.float64)
  t = (sigma_max ** (1 / rho) + i / (num_steps - 1) *
       (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  return np.concatenate([t, np.zeros([1])])


def per_image_normal(image_seeds, shape, salt):
  """One stateless N(0, 1) draw of `shape` per image, keyed by (image seed, salt)."""
  def one(seed):
    return tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, salt))
  return tf.map_fn(one, image_seeds, fn_output_signature=tf.float32)


def image_seeds(seed, indices):
  """[B, 2] per-image stateless seeds from a global `seed` and global image `indices`."""
  base = tf.constant([seed, 0], tf.int64) if isinstance(seed, int) else seed
  return tf.map_fn(lambda i: tf.random.experimental.stateless_fold_in(base, i),
                   tf.cast(indices, tf.int64), fn_output_signature=tf.int64)


def heun_sample(denoise, image_seeds_, labels, shape, num_steps=NUM_STEPS, sigma_min=SIGMA_MIN,
                sigma_max=SIGMA_MAX, rho=RHO, s_churn=0.0, s_min=0.0, s_max=float("inf"),
                s_noise=1.0, round_sigma=None):
  """Samples x_0 (model range, e.g. [-1, 1]) with `denoise(x, sigma, labels) -> D(x; sigma)`
  (`sigma` a float32 scalar tensor).

  The N - 1 second-order steps are a tf.while_loop, so a tf.function traces the network three
  times (two Heun evaluations, the final Euler step) instead of 2N - 1 times: tracing the
  unrolled CIFAR-10 U-Net 35 times takes minutes. Every per-step constant (t_hat, the step
  size, the churn noise scale) is computed in float64 on the host as EDM does in Python, then
  used in float32. `round_sigma` (numpy -> numpy) snaps the noise levels to a network's grid,
  as edm_sampler's `net.round_sigma` on t_i and t_hat (rgd.edm.iddpm: the DDPM steps).
  """
  t = time_steps(num_steps, sigma_min, sigma_max, rho)
  snap = round_sigma or (lambda s: s)
  t = np.concatenate([snap(t[:-1]), t[-1:]])
  t_cur, t_next = t[:-1], t[1:]
  gamma = np.where((s_min <= t_cur) & (t_cur <= s_max),
                   min(s_churn / num_steps, math.sqrt(2) - 1), 0.0)
  t_hat = snap(t_cur + gamma * t_cur)
  noise_scale = np.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise   # 0 where gamma = 0
  const = lambda a: tf.constant(a, tf.float32)
  t_hat_, t_next_, dt_, noise_ = const(t_hat), const(t_next), const(t_next - t_hat), const(
      noise_scale)
  churn = bool(s_churn) and bool((gamma > 0).any())

  def euler(i, x_cur):
    x_hat = x_cur
    if churn:   # "increase noise temporarily" (Algorithm 2, lines 5-6); exact no-op at gamma 0
      x_hat = x_cur + noise_[i] * per_image_normal(image_seeds_, shape, i + 1)
    d_cur = (x_hat - tf.cast(denoise(x_hat, t_hat_[i], labels), tf.float32)) / t_hat_[i]
    return x_hat, d_cur, x_hat + dt_[i] * d_cur

  def heun_step(i, x_cur):
    x_hat, d_cur, x_next = euler(i, x_cur)
    # 2nd-order correction (Algorithm 2, lines 9-11).
    d_prime = (x_next - tf.cast(denoise(x_next, t_next_[i], labels), tf.float32)) / t_next_[i]
    return i + 1, x_hat + dt_[i] * (0.5 * d_cur + 0.5 * d_prime)

  x = per_image_normal(image_seeds_, shape, 0) * float(t[0])
  _, x = tf.while_loop(lambda i, _: i < num_steps - 1, heun_step, (tf.constant(0), x))
  return euler(tf.constant(num_steps - 1), x)[2]   # last step to sigma_N = 0: Euler


def guided(denoise, guidance):
  """Classifier-free guidance: D_u + w (D_c - D_u), with D_u the null-label (zeros) denoiser."""
  if not guidance or guidance == 1.0:
    return denoise
  def fn(x, sigma, labels):
    cond = denoise(x, sigma, labels)
    uncond = denoise(x, sigma, tf.zeros_like(labels))
    return uncond + guidance * (cond - uncond)
  return fn
