"""A tiny CNN for debug runs and tests (about 130k parameters with width 32)."""
import keras

from rgd.models import common


def tiny_cnn(width=32, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None,
             layers=None):
  layers = layers or common.Layers()
  inputs, x = common.normalized_input(input_shape, mean, std)
  for i, mult in enumerate((1, 2, 4)):
    x = layers.conv(width * mult, 3, 1 if i == 0 else 2, f"conv{i}")(x)
    x = layers.bn(f"bn{i}")(x)
    x = keras.layers.Activation("swish", name=f"act{i}")(x)
  return layers.head(inputs, x, num_classes, f"tiny_cnn{width}")
