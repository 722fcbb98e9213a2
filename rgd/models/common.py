"""Pieces shared by the architectures: input normalisation, the layer factory, the head.

`Layers` fixes how every conv, BatchNorm and the logits layer are built, so that one object
chooses the initialisation for a whole network. Its defaults follow DeepMind's released JAX
model zoo (deepmind-research `adversarial_robustness/jax/model_zoo.py`, read line by line;
docs/recipes.md "Model"):

- conv kernels: Haiku's `hk.Conv2D` default, `TruncatedNormal(stddev=1/sqrt(fan_in))`, cut at
  2 std *without* variance correction, so the sample std is 0.88/sqrt(fan_in). Keras'
  `he_normal` has 2x that variance (and PyTorch's default 1/3 of it); behind BatchNorm the
  effective learning rate scales as 1/||w||^2, so the init changes how fast a run trains.
- BatchNorm: `WideResNet` builds every `hk.BatchNorm` from its own `norm_args` default,
  `create_offset=True, create_scale=True, decay_rate=.99` (the block's `create_offset=False`
  default is never used: `WideResNet` always passes its `norm_args`). So BN has beta here too;
  `bn_offset=False` removes it.
- logits: `hk.Linear(num_classes, w_init=jnp.zeros)`, a zero kernel (bias zero);
  `head_init='haiku'` gives hk.Linear's default TruncatedNormal(1/sqrt(fan_in)) instead.
"""
import keras

from rgd.errors import ConfigError
from rgd.models.fused_bn import FusedBatchNormalization

# BatchNorm decay 0.99 (PyTorch momentum 0.01) and Haiku's epsilon, as in DeepMind's JAX code
# (docs/recipes.md "Model").
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-5

# Haiku's TruncatedNormal(stddev) samples N(0, stddev^2) cut at +-2 stddev, whose std is
# 0.8796 * stddev. Keras' VarianceScaling('truncated_normal') divides by that factor to *undo*
# the cut, so scale = 0.8796^2 gives Haiku's distribution exactly.
_TRUNCATION_STD = 0.87962566103423978


def kernel_initializer(name):
  """'haiku' (DeepMind), 'pytorch' (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))) or any
  Keras initializer name such as 'he_normal' (rgd <= 0.1) or 'zeros'."""
  if name == "haiku":
    return keras.initializers.VarianceScaling(_TRUNCATION_STD**2, "fan_in", "truncated_normal")
  if name == "pytorch":
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")
  return keras.initializers.get(name)


CONV_INITS = ("haiku", "pytorch", "he_normal")
HEAD_INITS = ("zeros", "haiku", "pytorch")


class Layers:
  """Builds the convs, BatchNorms and head of a network with one set of choices."""

  def __init__(self, conv_init="haiku", bn_offset=True, head_init="zeros", fused_bn=True):
    if conv_init not in CONV_INITS:
      raise ConfigError(f"conv_init={conv_init!r}: expected one of {CONV_INITS}")
    if head_init not in HEAD_INITS:
      raise ConfigError(f"head_init={head_init!r}: expected one of {HEAD_INITS}")
    self.conv_init = conv_init
    self.bn_offset = bool(bn_offset)
    self.head_init = head_init
    self.fused_bn = bool(fused_bn)

  def conv(self, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_initializer=kernel_initializer(self.conv_init), name=name)

  def bn(self, name):
    # The fused kernel: same variables and numbers as Keras' layer, fewer passes (fused_bn.py).
    cls = FusedBatchNormalization if self.fused_bn else keras.layers.BatchNormalization
    return cls(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=self.bn_offset, name=name)

  def head(self, inputs, features, num_classes, name):
    """Global average pool -> dense; logits in float32.

    The last layer runs in float32 so that logits (and every attack loss built on them) stay
    float32 under a bf16 policy.
    """
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    logits = keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer(
        self.head_init), name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def normalized_input(input_shape, mean, std):
  """Returns (inputs, normalised tensor). Attacks work in [0, 1]; normalisation is the model's."""
  inputs = keras.Input(shape=input_shape, name="image")
  if mean is None:
    return inputs, inputs
  mean = [float(m) for m in mean]
  var = [float(s) ** 2 for s in std]
  x = keras.layers.Normalization(mean=mean, variance=var, name="normalize")(inputs)
  return inputs, x


def batchnorm_statistics(model):
  """The moving means and variances of every BatchNormalization layer of `model`, and the
  running statistics other normalisations list in `moving_statistics` (the mean shift of
  rgd.certified.layers.LinfDist): the weight average and TRADES' BN handling treat them alike."""
  out = []
  for layer in model._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      out += [layer.moving_mean, layer.moving_variance]
    out += list(getattr(layer, "moving_statistics", ()))
  return out

