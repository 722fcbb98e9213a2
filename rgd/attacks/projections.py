"""Projections onto the threat model intersected with the image box [0, 1].

Each factory returns `project(x, x0)`. Clipping to the box after projecting onto the ball keeps
the point in the ball, because the box contains x0 and clipping only moves a coordinate towards
it; so one projection after the other gives a point in the intersection.
"""
import tensorflow as tf

from rgd.errors import ConfigError

BOUNDS = (0.0, 1.0)


def per_example_norm(x, norm):
  """Linf or L2 norm of each example of a batch: [B, ...] -> [B]."""
  flat = tf.reshape(x, [tf.shape(x)[0], -1])
  if norm == "linf":
    return tf.reduce_max(tf.abs(flat), axis=1)
  return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))


def expand(v, x):
  """[B] -> [B, 1, 1, ...] broadcastable against x."""
  return tf.reshape(v, tf.concat([tf.shape(v), tf.ones_like(tf.shape(x)[1:])], 0))


def box_project_fn(bounds=BOUNDS):
  def project(x, x0=None):
    del x0
    return tf.clip_by_value(x, bounds[0], bounds[1])
  return project


def linf_project_fn(eps, bounds=BOUNDS):
  def project(x, x0):
    x = tf.clip_by_value(x, x0 - eps, x0 + eps)
    return tf.clip_by_value(x, bounds[0], bounds[1])
  return project


def l2_project_fn(eps, bounds=BOUNDS):
  def project(x, x0):
    delta = x - x0
    norm = expand(per_example_norm(delta, "l2"), delta)
    # Shrink only points outside the ball; the factor < 1 absorbs float rounding.
    factor = tf.minimum(1.0, eps / tf.maximum(norm, 1e-12))
    x = x0 + delta * factor * (1.0 - 1e-6)
    return tf.clip_by_value(x, bounds[0], bounds[1])
  return project


def project_fn(norm, eps, bounds=BOUNDS):
  if norm == "linf":
    return linf_project_fn(eps, bounds)
  if norm == "l2":
    return l2_project_fn(eps, bounds)
  raise ConfigError(f"Unknown norm {norm!r}; expected 'linf' or 'l2'")
