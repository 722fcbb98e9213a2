"""What every evaluation report writes besides its own files: TensorBoard events under
`OUTPUT_DIR/tensorboard`, at the step of the checkpoint that was evaluated (so that the
evaluations of a run line up with its training curves)."""
import os

import tensorflow as tf


def write_tensorboard(output_dir, step, scalars, texts=None, images=None):
  """`scalars` {tag: float}, `texts` {tag: markdown}, `images` {tag: uint8 [1, H, W, C]}."""
  writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
  with writer.as_default(step=step or 0):
    for tag, value in scalars.items():
      tf.summary.scalar(tag, value)
    for tag, text in (texts or {}).items():
      tf.summary.text(tag, text)
    for tag, image in (images or {}).items():
      tf.summary.image(tag, image)
  writer.close()
