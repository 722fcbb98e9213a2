"""Shared pieces of the batch augmentations: stateless sampling and parameter checks.

All randomness is stateless (`tf.random.stateless_*` from an int32 [2] seed), so an augmentation
is a pure function of (batch, seed): the same eagerly and inside `tf.data.map`, and a resumed
input pipeline replays it exactly.
"""
import numbers

import tensorflow as tf

from rgd.errors import ConfigError


def split_seed(seed, num):
  return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), num))


def sample_beta(shape, seed, a, b):
  """Beta(a, b) as G_a / (G_a + G_b) with G ~ Gamma (TF has no stateless Beta sampler)."""
  seeds = split_seed(seed, 2)
  ga = tf.random.stateless_gamma(shape, seeds[0], alpha=a)
  gb = tf.random.stateless_gamma(shape, seeds[1], alpha=b)
  # For tiny a and b both draws can underflow to 0: call that a tie.
  return tf.where(ga + gb > 0, ga / tf.maximum(ga + gb, 1e-30), 0.5)


def uniform_int(shape, seed, maxval):
  """Integers uniform in [0, maxval) (maxval an int32 tensor >= 1, broadcast to `shape`)."""
  u = tf.random.stateless_uniform(shape, seed)
  maxval = tf.cast(maxval, tf.float32)
  return tf.cast(tf.minimum(tf.floor(u * maxval), maxval - 1.), tf.int32)


def random_permutation(n, seed):
  """A uniformly random permutation of range(n): the partner of each example (DeepMind's
  `jax.random.permutation`; an example may be its own partner)."""
  return tf.argsort(tf.random.stateless_uniform([n], seed), stable=True)


def applied(n, seed, probability):
  """Bool [n]: which examples are augmented (each with `probability`)."""
  if probability >= 1.:
    return tf.ones([n], tf.bool)
  return tf.random.stateless_uniform([n], seed) < probability


def check_probability(op, value, name="probability"):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0. <= value <= 1.:
    raise ConfigError(f"{op}: {name} must be in [0, 1], got {value}")
  return float(value)


def check_positive(op, value, name):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0.:
    raise ConfigError(f"{op}: {name} must be > 0, got {value}")
  return float(value)


def check_window(op, value, name="window_length"):
  if (isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value
      or value <= 0):
    raise ConfigError(f"{op}: {name} must be a positive whole number of pixels, got {value}")
  return int(value)


def check_batch(op, batch):
  missing = [k for k in ("image", "label") if k not in batch]
  if missing:
    raise ConfigError(f"{op}: the batch needs keys 'image' [b, H, W, C] and 'label' [b, K]; "
                      f"missing {missing}")
  if batch["image"].shape.rank != 4 or batch["label"].shape.rank != 2:
    raise ConfigError(f"{op}: expected image [b, H, W, C] and soft labels [b, K], got "
                      f"{batch['image'].shape} and {batch['label'].shape}")
  if batch["image"].shape[1] is None or batch["image"].shape[2] is None:
    raise ConfigError(f"{op}: the image height and width must be static, got "
                      f"{batch['image'].shape}")
