"""AdversarialAugment (AdA), seed 003 Sec. 2 and App. A.

A corrupted adversarial example is c_{phi + beta}(x) for the corruption network c_phi
(rgd.corruptions.networks) and a weight perturbation beta maximising the classifier's
cross-entropy:

    max_beta CE(f(c_{phi + beta}(x)), y)   s.t. ||beta_i||_2 <= nu_i = nu * ||phi_i||_2

for every block i, the kernel and the bias of each layer separately, nu = 0.015. The
maximisation: a random start in the feasible set, 10 steps of iterated FGSM
(beta <- beta + s * sign(grad)) with s = 1/4 of the median radius over all blocks, a
projection (clip to each block's ball) after every step (App. A "Inner maximization"). The
result goes through the SSIM guard (ssim.py, App. G).

Each example gets its own beta (`num_groups=None`, the seed's per-example risk: App. C "it
considers individual examples to be independent from each other"). `num_groups=G` shares one
beta among each of G equal slices of the batch instead, which saves the per-example kernels'
memory; `tools/benchmark.py ada` measures both.
"""
import numpy as np
import tensorflow as tf

from rgd.corruptions import ssim as ssim_lib
from rgd.errors import ConfigError

NU = 0.015  # seed 003 Sec. 2
STEPS = 10  # App. A
STEP_FRACTION = 0.25  # step = 1/4 of the median radius (App. A)


def block_radii(params, nu=NU):
  """nu_i = nu * ||phi_i||_2 for every block (dict name -> float)."""
  return {k: float(nu * np.linalg.norm(np.asarray(v).ravel())) for k, v in params.items()}


def _group_norms(t):
  return tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1))


def project(beta, radii):
  """Each group's block scaled back into its ball ||beta_i|| <= nu_i."""
  out = {}
  for k, b in beta.items():
    norm = _group_norms(b)
    scale = tf.minimum(1.0, radii[k] / tf.maximum(norm, 1e-12))
    out[k] = b * tf.reshape(scale, [-1] + [1] * (b.shape.rank - 1))
  return out


def random_start(params, radii, num_groups, seed):
  """Uniform in each block's ball: a Gaussian direction times radius * U^(1/d)."""
  out = {}
  seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int32),
                                                            2 * len(params)))
  for i, (k, v) in enumerate(sorted(params.items())):
    shape = [num_groups] + list(np.shape(v))
    d = float(np.prod(np.shape(v)))
    direction = tf.random.stateless_normal(shape, seeds[2 * i])
    direction /= tf.reshape(tf.maximum(_group_norms(direction), 1e-12),
                            [-1] + [1] * len(np.shape(v)))
    u = tf.random.stateless_uniform([num_groups], seeds[2 * i + 1]) ** (1.0 / d)
    out[k] = direction * tf.reshape(radii[k] * u, [-1] + [1] * len(np.shape(v)))
  return out


class AdA:
  """AdA's inner maximisation for one corruption network and its weights `params`."""

  def __init__(self, network, params, nu=NU, steps=STEPS, step_fraction=STEP_FRACTION,
               ssim_threshold=ssim_lib.SSIM_THRESHOLD, num_groups=None):
    if not nu > 0:
      raise ConfigError(f"AdA: nu must be > 0, got {nu}")
    self.network = network
    self.params = {k: tf.constant(v, tf.float32) for k, v in params.items()}
    self.radii = block_radii(params, nu)
    self.step_size = step_fraction * float(np.median(list(self.radii.values())))
    self.steps, self.ssim_threshold, self.num_groups = int(steps), ssim_threshold, num_groups

  @staticmethod
  def network_seed(seed):
    """The corruption network's own randomness (one draw for the whole maximisation, so that
    every step perturbs the same function), apart from the random start's."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), 7)

  def groups_for(self, batch_size):
    g = self.num_groups or batch_size
    if batch_size % g:
      raise ConfigError(f"AdA: num_groups={g} does not divide the batch of {batch_size}")
    return g

  def corrupt(self, beta, images, seed=None):
    """c_{phi + beta}(x): group g's network corrupts the g-th slice of the batch. A stochastic
    network (DeepAugment's CAE binarises its code at random) draws from `seed`."""
    kwargs = {"seed": seed} if getattr(self.network, "stochastic", False) else {}
    return self.network.apply({k: self.params[k][None] + b for k, b in beta.items()}, images,
                              **kwargs)

  def perturbation(self, classifier_fn, images, labels, seed, steps=None):
    """The maximising beta (dict of [G, ...]); `labels` int [B] or soft [B, K]."""
    num_groups = self.groups_for(images.shape[0])
    if labels.shape.rank == 1:
      labels = tf.one_hot(labels, tf.shape(classifier_fn(images[:1]))[-1])
    beta = random_start(self.params, self.radii, num_groups, seed)
    net_seed = self.network_seed(seed)
    for _ in range(self.steps if steps is None else steps):
      with tf.GradientTape() as tape:
        tape.watch(list(beta.values()))
        logits = tf.cast(classifier_fn(self.corrupt(beta, images, net_seed)), tf.float32)
        loss = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
      grads = tape.gradient(loss, beta)
      beta = project({k: b + self.step_size * tf.sign(grads[k]) for k, b in beta.items()},
                     self.radii)
    return beta

  def __call__(self, classifier_fn, images, labels, seed):
    """AdA images [B, H, W, C] in [0, 1] (SSIM-guarded), without gradient."""
    images = tf.convert_to_tensor(images, tf.float32)
    beta = self.perturbation(classifier_fn, images, labels, seed)
    corrupted = self.corrupt(beta, images, self.network_seed(seed))
    if self.ssim_threshold is not None:
      corrupted = ssim_lib.ssim_guard(images, corrupted, self.ssim_threshold)
    return tf.stop_gradient(corrupted)
