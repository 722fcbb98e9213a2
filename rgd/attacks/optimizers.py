"""Step rules of gradient-ascent attacks. Each has `init(x) -> state` and
`update(grad, state, step) -> (delta, state)`; the attack adds `delta` and then projects.

Learning rates are floats or functions of the (int32 tensor) step, e.g. `piecewise(...)`.
"""
import tensorflow as tf

from rgd.attacks.projections import expand, per_example_norm
from rgd.errors import ConfigError


def piecewise(values, boundaries):
  """Step-wise constant learning rate: values[i] until boundaries[i]."""
  if len(values) != len(boundaries) + 1:
    raise ConfigError("piecewise needs one more value than boundaries")

  def lr(step):
    out = tf.constant(values[-1], tf.float32)
    for b, v in reversed(list(zip(boundaries, values[:-1]))):
      out = tf.where(step < b, tf.constant(v, tf.float32), out)
    return out
  return lr


def _lr(learning_rate, step):
  return learning_rate(step) if callable(learning_rate) else tf.constant(learning_rate,
                                                                         tf.float32)


class SignGradient:
  """FGSM-style steps: lr * sign(grad) (Madry et al. 2018); the Linf steepest ascent."""

  def __init__(self, learning_rate):
    self.learning_rate = learning_rate

  def init(self, x):
    return ()

  def update(self, grad, state, step):
    return _lr(self.learning_rate, step) * tf.sign(grad), state


class NormalizedGradient:
  """L2 steepest ascent: lr * grad / ||grad||_2 per example."""

  def __init__(self, learning_rate):
    self.learning_rate = learning_rate

  def init(self, x):
    return ()

  def update(self, grad, state, step):
    norm = expand(per_example_norm(grad, "l2"), grad)
    return _lr(self.learning_rate, step) * grad / (norm + 1e-12), state


class Adam:
  """Adam ascent on the attack loss, as DeepMind's attacks (optax.adam on the negated loss)."""

  def __init__(self, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    self.learning_rate, self.b1, self.b2, self.eps = learning_rate, b1, b2, eps

  def init(self, x):
    return (tf.zeros_like(x), tf.zeros_like(x))

  def update(self, grad, state, step):
    m, v = state
    m = self.b1 * m + (1. - self.b1) * grad
    v = self.b2 * v + (1. - self.b2) * tf.square(grad)
    t = tf.cast(step, tf.float32) + 1.
    m_hat = m / (1. - self.b1**t)
    v_hat = v / (1. - self.b2**t)
    return _lr(self.learning_rate, step) * m_hat / (tf.sqrt(v_hat) + self.eps), (m, v)


def steepest_ascent(norm, learning_rate):
  """The sign step for Linf, the normalised gradient for L2."""
  if norm == "linf":
    return SignGradient(learning_rate)
  if norm == "l2":
    return NormalizedGradient(learning_rate)
  raise ConfigError(f"Unknown norm {norm!r}; expected 'linf' or 'l2'")
