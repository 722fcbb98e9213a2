"""ResNet-18 (post-activation, CIFAR stem) and pre-activation ResNet-18/50 (He et al. 2016).

PreAct-ResNet-50 is the AdA classifier (Calian et al. 2022); ResNet-18 is the small model of
Gowal et al. 2021. CIFAR variants: 3x3 stem, no max-pool.

`dm_preact_resnet` is DeepMind's own PreAct-ResNet-18/34 (their PyTorch model zoo, served by
RobustBench as `DMPreActResNet`, robustbench/model_zoo/architectures/dm_wide_resnet.py): its
projection shortcut is a *3x3* conv of the *raw* block input, where He et al.'s (above) is a
1x1 conv of the activated input, so its checkpoints need this variant.
"""
import functools

import keras

from rgd.errors import ConfigError
from rgd.models import common

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _basic(layers, x, filters, stride, name):
  out = layers.conv(filters, 3, stride, f"{name}_conv1")(x)
  out = keras.layers.ReLU(name=f"{name}_relu1")(layers.bn(f"{name}_bn1")(out))
  out = layers.bn(f"{name}_bn2")(layers.conv(filters, 3, 1, f"{name}_conv2")(out))
  if stride != 1 or x.shape[-1] != filters:
    x = layers.bn(f"{name}_sc_bn")(layers.conv(filters, 1, stride, f"{name}_shortcut")(x))
  return keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.Add(name=f"{name}_add")([out, x]))


def _preact_basic(layers, x, filters, stride, name):
  out = keras.layers.ReLU(name=f"{name}_relu1")(layers.bn(f"{name}_bn1")(x))
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = layers.conv(filters, 1, stride, f"{name}_shortcut")(out)
  out = layers.conv(filters, 3, stride, f"{name}_conv1")(out)
  out = keras.layers.ReLU(name=f"{name}_relu2")(layers.bn(f"{name}_bn2")(out))
  out = layers.conv(filters, 3, 1, f"{name}_conv2")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _preact_bottleneck(layers, x, filters, stride, name):
  out = keras.layers.ReLU(name=f"{name}_relu1")(layers.bn(f"{name}_bn1")(x))
  shortcut = x
  if stride != 1 or x.shape[-1] != 4 * filters:
    shortcut = layers.conv(4 * filters, 1, stride, f"{name}_shortcut")(out)
  out = layers.conv(filters, 1, 1, f"{name}_conv1")(out)
  out = keras.layers.ReLU(name=f"{name}_relu2")(layers.bn(f"{name}_bn2")(out))
  out = layers.conv(filters, 3, stride, f"{name}_conv2")(out)
  out = keras.layers.ReLU(name=f"{name}_relu3")(layers.bn(f"{name}_bn3")(out))
  out = layers.conv(4 * filters, 1, 1, f"{name}_conv3")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _dm_preact_basic(layers, x, filters, stride, name, activation="relu"):
  out = keras.layers.Activation(activation, name=f"{name}_act1")(layers.bn(f"{name}_bn1")(x))
  shortcut = x
  # DMPreActResNet: `has_shortcut = stride != 1 or in_planes != out_planes`, a 3x3 conv of x.
  if stride != 1 or x.shape[-1] != filters:
    shortcut = layers.conv(filters, 3, stride, f"{name}_shortcut")(x)
  out = layers.conv(filters, 3, stride, f"{name}_conv1")(out)
  out = keras.layers.Activation(activation, name=f"{name}_act2")(layers.bn(f"{name}_bn2")(out))
  out = layers.conv(filters, 3, 1, f"{name}_conv2")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def dm_preact_resnet(depth=18, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None,
                     layers=None, activation="relu"):
  """DeepMind's PreAct-ResNet-18/34 (see the module docstring); 'same' padding is what its
  manual F.pad does (stride 2: one row and column after, none before)."""
  if depth not in (18, 34):
    raise ConfigError(f"DM PreAct-ResNet depth must be 18 or 34, got {depth}")
  block = functools.partial(_dm_preact_basic, activation=activation)
  return _resnet(block, depth, True, num_classes, input_shape, mean, std,
                 f"dm_preact_resnet{depth}", layers, activation)


def _resnet(block, depth, preact, num_classes, input_shape, mean, std, name, layers,
            head_activation="relu"):
  layers = layers or common.Layers()
  inputs, x = common.normalized_input(input_shape, mean, std)
  x = layers.conv(64, 3, 1, "stem_conv")(x)
  if not preact:
    x = keras.layers.ReLU(name="stem_relu")(layers.bn("stem_bn")(x))
  for stage, blocks in enumerate(_LAYERS[depth]):
    for i in range(blocks):
      stride = 2 if (stage > 0 and i == 0) else 1
      x = block(layers, x, 64 * 2**stage, stride, f"stage{stage}_block{i}")
  if preact:
    act = (keras.layers.ReLU(name="head_relu") if head_activation == "relu" else
           keras.layers.Activation(head_activation, name="head_act"))
    x = act(layers.bn("head_bn")(x))
  return layers.head(inputs, x, num_classes, name)


def resnet18(num_classes=10, input_shape=(32, 32, 3), mean=None, std=None, layers=None):
  return _resnet(_basic, 18, False, num_classes, input_shape, mean, std, "resnet18", layers)


def preact_resnet(depth=18, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None,
                  layers=None):
  if depth not in (18, 50):
    raise ConfigError(f"PreAct-ResNet depth must be 18 or 50, got {depth}")
  block = _preact_basic if depth == 18 else _preact_bottleneck
  return _resnet(block, depth, True, num_classes, input_shape, mean, std,
                 f"preact_resnet{depth}", layers)
