"""ResNet-18 (post-activation, CIFAR stem) and pre-activation ResNet-18/50 (He et al. 2016).

PreAct-ResNet-50 is the AdA classifier (Calian et al. 2022); ResNet-18 is the small model of
Gowal et al. 2021. CIFAR variants: 3x3 stem, no max-pool.
"""
import keras

from rgd.models import common

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _bn(name):
  return keras.layers.BatchNormalization(name=name, **common.bn_kwargs())


def _basic(x, filters, stride, name):
  out = common.conv(filters, 3, stride, f"{name}_conv1")(x)
  out = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(out))
  out = _bn(f"{name}_bn2")(common.conv(filters, 3, 1, f"{name}_conv2")(out))
  if stride != 1 or x.shape[-1] != filters:
    x = _bn(f"{name}_sc_bn")(common.conv(filters, 1, stride, f"{name}_shortcut")(x))
  return keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.Add(name=f"{name}_add")([out, x]))


def _preact_basic(x, filters, stride, name):
  out = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(x))
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = common.conv(filters, 1, stride, f"{name}_shortcut")(out)
  out = common.conv(filters, 3, stride, f"{name}_conv1")(out)
  out = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(out))
  out = common.conv(filters, 3, 1, f"{name}_conv2")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _preact_bottleneck(x, filters, stride, name):
  out = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(x))
  shortcut = x
  if stride != 1 or x.shape[-1] != 4 * filters:
    shortcut = common.conv(4 * filters, 1, stride, f"{name}_shortcut")(out)
  out = common.conv(filters, 1, 1, f"{name}_conv1")(out)
  out = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(out))
  out = common.conv(filters, 3, stride, f"{name}_conv2")(out)
  out = keras.layers.ReLU(name=f"{name}_relu3")(_bn(f"{name}_bn3")(out))
  out = common.conv(4 * filters, 1, 1, f"{name}_conv3")(out)
  return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _resnet(block, depth, preact, num_classes, input_shape, mean, std, name):
  inputs, x = common.normalized_input(input_shape, mean, std)
  x = common.conv(64, 3, 1, "stem_conv")(x)
  if not preact:
    x = keras.layers.ReLU(name="stem_relu")(_bn("stem_bn")(x))
  for stage, blocks in enumerate(_LAYERS[depth]):
    for i in range(blocks):
      stride = 2 if (stage > 0 and i == 0) else 1
      x = block(x, 64 * 2**stage, stride, f"stage{stage}_block{i}")
  if preact:
    x = keras.layers.ReLU(name="head_relu")(_bn("head_bn")(x))
  return common.classifier_head(inputs, x, num_classes, name)


def resnet18(num_classes=10, input_shape=(32, 32, 3), mean=None, std=None):
  return _resnet(_basic, 18, False, num_classes, input_shape, mean, std, "resnet18")


def preact_resnet(depth=18, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None):
  if depth not in (18, 50):
    raise ValueError(f"PreAct-ResNet depth must be 18 or 50, got {depth}")
  block = _preact_basic if depth == 18 else _preact_bottleneck
  return _resnet(block, depth, True, num_classes, input_shape, mean, std,
                 f"preact_resnet{depth}")
