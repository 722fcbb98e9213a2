"""iDDPM preconditioning (Nichol & Dhariwal 2021, as EDM Table 1 "iDDPM" writes it) for a
network trained as a discrete-time DDPM with the cosine schedule: guided-diffusion's ADM.

Follows NVlabs/edm `training/networks.py` iDDPMPrecond:

    c_skip = 1     c_out = -sigma     c_in = 1 / sqrt(sigma^2 + 1)
    c_noise = M - 1 - j(sigma),  j = the index of the u_j nearest to sigma

with u_M = 0 and u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j - 1) / abar(j), C_1) - 1), abar(j) =
sin(pi j / (2 M (1 + C_2)))^2 (the cosine schedule of iDDPM Eq. 17 in EDM's form), M = 1000,
C_1 = 0.001, C_2 = 0.008. D(x; sigma) = x - sigma F(c_in x; c_noise)[:C]: the network predicts
the noise (eps); its other C output channels (learn_sigma's variance) are not used.

The network's supported range is [u_{M-1}, u_0] (sigma_min ~0.0064, sigma_max ~20291), and
EDM's sampler rounds every noise level to the u grid (generate.py edm_sampler `net.round_sigma`),
which `round_sigma` does here on the host. u is computed in float64 and stored as float32:
networks.py runs the same recursion in float32, whose round-off accumulates over the 1000 steps
to 5e-4 relative at the low end (u_999 0.0064254 here, 0.0064223 there); every sigma of the
tests maps to the same index j on both sides (tests/test_adm.py).
"""
import math

import numpy as np
import tensorflow as tf

from rgd.edm import unet

C_1 = 0.001   # networks.py iDDPMPrecond C_1: timestep adjustment at low noise levels
C_2 = 0.008   # C_2: at high noise levels (iDDPM's cosine-schedule offset s)
M = 1000      # original number of DDPM timesteps (guided-diffusion --diffusion_steps 1000)


def alpha_bar(j, m=M, c_2=C_2):
  """iDDPMPrecond.alpha_bar: sin(0.5 pi j / M / (C_2 + 1))^2, float64."""
  return np.sin(0.5 * math.pi * np.asarray(j, np.float64) / m / (c_2 + 1)) ** 2


def u_table(m=M, c_1=C_1, c_2=C_2):
  """u_0 > u_1 > ... > u_M = 0 (float32 array of M + 1), the noise levels of the DDPM steps."""
  u = np.zeros(m + 1, np.float64)
  for j in range(m, 0, -1):
    ratio = max(alpha_bar(j - 1, m, c_2) / alpha_bar(j, m, c_2), c_1)
    u[j - 1] = math.sqrt((u[j] ** 2 + 1) / ratio - 1)
  return u.astype(np.float32)


class IDDPMPrecond:
  """D(x, sigma, labels, augment_labels=None, training=False) of a raw network F whose first
  `img_channels` outputs are eps (guided-diffusion: 2 x channels with learn_sigma), plus the
  grid helpers the sampler needs. Computed in float32 whatever the Keras policy."""

  def __init__(self, network, img_channels=None, m=M, c_1=C_1, c_2=C_2):
    self.network, self.m = network, m
    self.img_channels = img_channels or int(network.inputs[0].shape[-1])
    self.u = u_table(m, c_1, c_2)
    self.sigma_min, self.sigma_max = float(self.u[m - 1]), float(self.u[0])
    self._u = tf.constant(self.u)
    self._augment_dim = unet.augment_dim_of(network)

  def round_sigma(self, sigma):
    """The nearest u_j to each sigma (numpy, host; iDDPMPrecond.round_sigma)."""
    sigma = np.asarray(sigma, np.float64)
    index = np.abs(sigma[..., None] - self.u.astype(np.float64)).argmin(-1)
    return self.u[index].astype(np.float64)

  def c_noise(self, sigma):
    """M - 1 - argmin_j |sigma - u_j| (float32 [B]); ties go to the lower index as cdist's
    argmin."""
    index = tf.argmin(tf.abs(sigma[:, None] - self._u[None, :]), axis=1, output_type=tf.int32)
    return tf.cast(self.m - 1 - index, tf.float32)

  def __call__(self, x, sigma, labels, augment_labels=None, training=False):
    x = tf.cast(x, tf.float32)
    sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), tf.shape(x)[:1])
    s = sigma[:, None, None, None]
    inputs = [x / tf.sqrt(s ** 2 + 1.0), self.c_noise(sigma), tf.cast(labels, tf.float32)]
    if self._augment_dim:
      inputs.append(unet.zero_augment_labels(self.network, tf.shape(x)[0])
                    if augment_labels is None else tf.cast(augment_labels, tf.float32))
    f = tf.cast(self.network(inputs, training=training), tf.float32)
    return x - s * f[..., :self.img_channels]
