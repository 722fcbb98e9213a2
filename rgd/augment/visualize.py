"""A grid of images for PNG files and TensorBoard (`tf.summary.image` takes its output)."""
import tensorflow as tf

from rgd.errors import ConfigError


def image_grid(rows, padding=2, scale=1, background=1.0):
  """`rows`: float [R, C, H, W, 3] in [0, 1] -> uint8 [1, R*(H*scale+p)+p, C*(W*scale+p)+p, 3],
  each image upscaled `scale` times (nearest neighbour) and framed by `padding` pixels."""
  rows = tf.convert_to_tensor(rows, tf.float32)
  if rows.shape.rank != 5 or rows.shape[-1] != 3:
    raise ConfigError(f"image_grid expects [rows, columns, H, W, 3], got {rows.shape}")
  if scale > 1:
    rows = tf.repeat(tf.repeat(rows, scale, axis=2), scale, axis=3)
  p = padding
  rows = tf.pad(rows, [[0, 0], [0, 0], [0, p], [0, p], [0, 0]], constant_values=background)
  r, c, h, w = rows.shape[0], rows.shape[1], rows.shape[2], rows.shape[3]
  grid = tf.reshape(tf.transpose(rows, [0, 2, 1, 3, 4]), [r * h, c * w, 3])
  grid = tf.pad(grid, [[p, 0], [p, 0], [0, 0]], constant_values=background)
  return tf.cast(tf.round(tf.clip_by_value(grid, 0., 1.) * 255.), tf.uint8)[None]
