"""Starting points of an attack. Each factory returns `init(x0, seed) -> delta` (stateless
random ops, `seed` an int32 [2] tensor), so an attack is a pure function of its seed.

`seed` may also be int32 [B, 2], one seed per example (evaluation attacks, common.py): each
row is then drawn from its own seed, so a point's start does not depend on its batch.
"""
import tensorflow as tf

from rgd.attacks import common
from rgd.errors import ConfigError


def _per_example(seed):
  return tf.convert_to_tensor(seed).shape.rank == 2


def zero_init():
  def init(x0, seed):
    del seed
    return tf.zeros_like(x0)
  return init


def linf_uniform_init(eps):
  def init(x0, seed):
    if _per_example(seed):
      return tf.cast(common.uniform(seed, x0.shape[1:], -eps, eps), x0.dtype)
    return tf.random.stateless_uniform(tf.shape(x0), seed, -eps, eps, dtype=x0.dtype)
  return init


def l2_uniform_init(eps):
  """Uniform in the L2 ball: a uniform direction times eps * u^(1/d)."""
  def init(x0, seed):
    batch_shape = tf.concat([tf.shape(x0)[:1], tf.ones_like(tf.shape(x0)[1:])], 0)
    if _per_example(seed):
      direction = tf.cast(common.normal(common.fold_in(seed, 0), x0.shape[1:]), x0.dtype)
      u = tf.reshape(tf.cast(common.uniform(common.fold_in(seed, 1), []), x0.dtype),
                     batch_shape)
    else:
      seeds = tf.random.experimental.stateless_split(seed, 2)
      direction = tf.random.stateless_normal(tf.shape(x0), seeds[0], dtype=x0.dtype)
      u = tf.random.stateless_uniform(batch_shape, seeds[1], dtype=x0.dtype)
    axes = tf.range(1, tf.rank(x0))
    direction /= tf.sqrt(tf.reduce_sum(tf.square(direction), axes, keepdims=True)) + 1e-12
    d = tf.cast(tf.reduce_prod(tf.shape(x0)[1:]), x0.dtype)
    radius = eps * u ** (1. / d)
    return direction * radius
  return init


def normal_init(stddev):
  """Small Gaussian start; TRADES starts its KL maximisation at 0.001 * N(0, 1)
  (Zhang et al. 2019, reference code)."""
  def init(x0, seed):
    if _per_example(seed):
      return stddev * tf.cast(common.normal(seed, x0.shape[1:]), x0.dtype)
    return stddev * tf.random.stateless_normal(tf.shape(x0), seed, dtype=x0.dtype)
  return init


def uniform_init(norm, eps):
  if norm == "linf":
    return linf_uniform_init(eps)
  if norm == "l2":
    return l2_uniform_init(eps)
  raise ConfigError(f"Unknown norm {norm!r}; expected 'linf' or 'l2'")
