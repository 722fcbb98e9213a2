"""Starting points of an attack. Each factory returns `init(x0, seed) -> delta` (stateless
random ops, `seed` an int32 [2] tensor), so an attack is a pure function of its seed."""
import tensorflow as tf


def zero_init():
  def init(x0, seed):
    del seed
    return tf.zeros_like(x0)
  return init


def linf_uniform_init(eps):
  def init(x0, seed):
    return tf.random.stateless_uniform(tf.shape(x0), seed, -eps, eps, dtype=x0.dtype)
  return init


def l2_uniform_init(eps):
  """Uniform in the L2 ball: a uniform direction times eps * u^(1/d)."""
  def init(x0, seed):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    direction = tf.random.stateless_normal(tf.shape(x0), seeds[0], dtype=x0.dtype)
    axes = tf.range(1, tf.rank(x0))
    direction /= tf.sqrt(tf.reduce_sum(tf.square(direction), axes, keepdims=True)) + 1e-12
    d = tf.cast(tf.reduce_prod(tf.shape(x0)[1:]), x0.dtype)
    batch_shape = tf.concat([tf.shape(x0)[:1], tf.ones_like(tf.shape(x0)[1:])], 0)
    radius = eps * tf.random.stateless_uniform(batch_shape, seeds[1], dtype=x0.dtype) ** (1. / d)
    return direction * radius
  return init


def normal_init(stddev):
  """Small Gaussian start; TRADES starts its KL maximisation at 0.001 * N(0, 1)
  (Zhang et al. 2019, reference code)."""
  def init(x0, seed):
    return stddev * tf.random.stateless_normal(tf.shape(x0), seed, dtype=x0.dtype)
  return init


def uniform_init(norm, eps):
  if norm == "linf":
    return linf_uniform_init(eps)
  if norm == "l2":
    return l2_uniform_init(eps)
  raise ValueError(f"Unknown norm {norm!r}; expected 'linf' or 'l2'")
