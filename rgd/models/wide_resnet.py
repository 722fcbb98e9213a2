"""Pre-activation Wide-ResNet with Swish (Gowal et al. 2020; used by Rebuffi et al. 2021 and
Gowal et al. 2021, App. A). See docs/recipes.md "Model".

WRN-d-w: depth = 6n + 4, three groups of n blocks of widths 16w, 32w, 64w, strides 1, 2, 2.
Block: BN -> Swish -> conv3x3 -> BN -> Swish -> conv3x3 (+ shortcut). The first block of a group
uses a 1x1 projection shortcut taken from the *activated* input.
"""
import keras

from rgd.errors import ConfigError
from rgd.models import common


def _block(layers, x, filters, stride, project, name, activation):
  out = layers.bn(f"{name}_bn1")(x)
  out = keras.layers.Activation(activation, name=f"{name}_act1")(out)
  # The projection shortcut sees the activated input (pre-activation ResNet, He et al. 2016).
  shortcut = (layers.conv(filters, 1, stride, f"{name}_shortcut")(out) if project else x)
  out = layers.conv(filters, 3, stride, f"{name}_conv1")(out)
  out = layers.bn(f"{name}_bn2")(out)
  out = keras.layers.Activation(activation, name=f"{name}_act2")(out)
  out = layers.conv(filters, 3, 1, f"{name}_conv2")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def wide_resnet(depth=28, width=10, num_classes=10, input_shape=(32, 32, 3), mean=None,
                std=None, name=None, layers=None, activation="swish"):
  """Builds WRN-`depth`-`width` as a functional Keras model taking [0, 1] images.

  `layers` (rgd.models.common.Layers) chooses the initialisation and BN offset; the default
  follows DeepMind's JAX model zoo. `activation` is 'swish' (DeepMind's robust models; PyTorch's
  SiLU is the same function) or 'relu' (DMWideResNet's default)."""
  layers = layers or common.Layers()
  if (depth - 4) % 6:
    raise ConfigError(f"WRN depth must be 6n + 4, got {depth}")
  n = (depth - 4) // 6
  inputs, x = common.normalized_input(input_shape, mean, std)
  x = layers.conv(16, 3, 1, "stem_conv")(x)
  for group, (mult, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
    for i in range(n):
      x = _block(layers, x, mult * width, stride if i == 0 else 1,
                 project=(i == 0 and (stride != 1 or x.shape[-1] != mult * width)),
                 name=f"group{group}_block{i}", activation=activation)
  x = layers.bn("head_bn")(x)
  x = keras.layers.Activation(activation, name="head_act")(x)
  return layers.head(inputs, x, num_classes, name or f"wrn{depth}_{width}")
