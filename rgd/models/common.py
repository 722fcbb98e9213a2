"""Pieces shared by the architectures: input normalisation, convs, BN settings, the head."""
import keras

# BatchNorm decay 0.99 (PyTorch momentum 0.01) and Haiku's epsilon, as in DeepMind's JAX code
# (RECIPES.md "Model").
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-5


def bn_kwargs():
  return dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)


def conv(filters, kernel, stride, name):
  return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal", name=name)


def normalized_input(input_shape, mean, std):
  """Returns (inputs, normalised tensor). Attacks work in [0, 1]; normalisation is the model's."""
  inputs = keras.Input(shape=input_shape, name="image")
  if mean is None:
    return inputs, inputs
  mean = [float(m) for m in mean]
  var = [float(s) ** 2 for s in std]
  x = keras.layers.Normalization(mean=mean, variance=var, name="normalize")(inputs)
  return inputs, x


def classifier_head(inputs, features, num_classes, name):
  """Global average pool -> dense with zero-initialised weights; logits in float32.

  The zero-initialised head follows DeepMind's JAX model zoo. The last layer runs in float32 so
  that logits (and every attack loss built on them) stay float32 under a bf16 policy.
  """
  x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
  logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits",
                              dtype="float32")(x)
  return keras.Model(inputs, logits, name=name)


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
