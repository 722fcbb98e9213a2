"""ResNet-18 (post-activation, CIFAR stem) and pre-activation ResNet-18/50 (He et al. 2016).

PreAct-ResNet-50 is the AdA classifier (Calian et al. 2022); ResNet-18 is the small model of
Gowal et al. 2021. CIFAR variants: 3x3 stem, no max-pool.
"""
import keras

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


def _resnet(block, depth, preact, num_classes, input_shape, mean, std, name, layers):
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
    x = keras.layers.ReLU(name="head_relu")(layers.bn("head_bn")(x))
  return layers.head(inputs, x, num_classes, name)


def resnet18(num_classes=10, input_shape=(32, 32, 3), mean=None, std=None, layers=None):
  return _resnet(_basic, 18, False, num_classes, input_shape, mean, std, "resnet18", layers)


def preact_resnet(depth=18, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None,
                  layers=None):
  if depth not in (18, 50):
    raise ValueError(f"PreAct-ResNet depth must be 18 or 50, got {depth}")
  block = _preact_basic if depth == 18 else _preact_bottleneck
  return _resnet(block, depth, True, num_classes, input_shape, mean, std,
                 f"preact_resnet{depth}", layers)
