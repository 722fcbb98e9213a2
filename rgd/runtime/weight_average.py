"""Exponential moving average of the weights (seed 000 Sec. 4; seed 001 App. A).

    avg <- decay_t * avg + (1 - decay_t) * w,   decay_t = min(tau, (1 + t) / (10 + t)),

the warm-up of DeepMind's `ema_update`, so that early averages are not dominated by the random
initialisation. tau = 0.995 (seed 001) or 0.999 (seed 000 with CutMix).

BatchNorm statistics: the moving mean and variance are averaged with the same decay, like the
trainable weights (timm's ModelEmaV2 does the same; DeepMind's JAX experiment instead evaluates
the averaged parameters with the online model's statistics). They are
running averages of batch statistics of recent weights already, so averaging them again keeps
them consistent with the averaged weights at no extra cost; recomputing them with a pass over
the data (SWA's bn_update) would cost an epoch of forward passes per evaluation. Constant
variables (the input normalisation) are not touched.
"""
import tensorflow as tf

from rgd.models.common import batchnorm_statistics
from rgd.errors import ConfigError


def decay_at(step, tau):
  """decay_t = min(tau, (1 + t) / (10 + t))."""
  t = tf.cast(step, tf.float32)
  return tf.minimum(tf.cast(tau, tf.float32), (1. + t) / (10. + t))


def averaged_variables(model):
  """The variables that the average follows: trainable ones and BN moving statistics."""
  return list(model.trainable_variables) + batchnorm_statistics(model)


class WeightAverage:
  """Keeps `avg_model`'s weights the EMA of `model`'s (two models of one architecture)."""

  def __init__(self, model, avg_model, tau):
    if not 0.0 <= tau < 1.0:
      raise ConfigError(f"EMA decay tau must be in [0, 1), got {tau}")
    self.tau = float(tau)
    self.pairs = list(zip(averaged_variables(avg_model), averaged_variables(model)))
    for a, w in self.pairs:
      if a.shape != w.shape:
        raise ConfigError(f"Averaged model does not match: {a.path} {a.shape} vs {w.shape}")

  def update(self, step):
    """One EMA step. Call in cross-replica context (after `strategy.run`): reading a
    BN statistic there gives its value aggregated over replicas."""
    decay = decay_at(step, self.tau)
    for a, w in self.pairs:
      a.assign(decay * a + (1. - decay) * tf.cast(w, a.dtype))
    return decay
