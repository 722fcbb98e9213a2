#!/usr/bin/env python
"""How the conv initialisation changes training speed, on a fixed synthetic task (no real data).

Convs feed BatchNorm, so a layer's output does not depend on the scale of its kernel but its
gradient scales as 1/||w||: the effective learning rate goes as 1/||w||^2. Keras' `he_normal`
(variance 2/fan_in) therefore trains like a 2.6x smaller learning rate than Haiku's
TruncatedNormal(1/sqrt(fan_in)) (sample variance 0.77/fan_in) and 6x smaller than PyTorch's
default (1/(3 fan_in)). This trains the same network from each init with rgd's own step
(RobustTrainer, SGD + Nesterov, weight decay) and prints the training loss after N steps.

  python tools/init_proxy.py --model=wrn-10-2 --steps=150 --seeds=0,1,2

The task: 1024 images of 10 classes, each class a mean colour plus heavy pixel noise, so a
network must average over the image to classify it (tests/conftest.py style).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
import keras
import numpy as np
import tensorflow as tf

from rgd import cli, models
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer

flags.DEFINE_string("model", "wrn-10-2", "Network (rgd.models name).")
flags.DEFINE_list("inits", ["he_normal", "haiku", "pytorch"], "conv_init values to compare.")
flags.DEFINE_integer("steps", 150, "Training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 0.05, "SGD learning rate (constant).")
flags.DEFINE_float("noise", 0.35, "Pixel noise std of the synthetic task.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (init and data order).")
FLAGS = flags.FLAGS


def synthetic_task(n, noise, seed=1234):
  rng = np.random.RandomState(seed)
  labels = np.arange(n) % 10
  colours = rng.uniform(0.3, 0.7, (10, 3))
  x = colours[labels][:, None, None, :] + rng.normal(0, noise, (n, 32, 32, 3))
  return np.clip(x, 0, 1).astype(np.float32), np.eye(10, dtype=np.float32)[labels]


def final_loss(conv_init, seed, images, labels):
  keras.utils.set_random_seed(seed)
  net = models.get_model(FLAGS.model, conv_init=conv_init)
  trainer = RobustTrainer(net, objectives.Objective(kind="standard"), FLAGS.batch_size,
                          weight_decay=5e-4, seed=seed)
  trainer.compile(optimizer=keras.optimizers.SGD(FLAGS.learning_rate, momentum=0.9,
                                                 nesterov=True))
  step = tf.function(trainer.train_step)
  order = np.random.RandomState(seed).permutation(len(images))
  tail = []
  for i in range(FLAGS.steps):
    idx = np.take(order, range(i * FLAGS.batch_size, (i + 1) * FLAGS.batch_size), mode="wrap")
    logs = step({"image": tf.constant(images[idx]), "label": tf.constant(labels[idx])})
    if i >= FLAGS.steps - 10:
      tail.append(float(logs["ce"]) / float(logs["count"]))
  return float(np.mean(tail))


def main(argv):
  del argv
  images, labels = synthetic_task(1024, FLAGS.noise)
  print(f"{FLAGS.model}, {FLAGS.steps} steps of batch {FLAGS.batch_size}, SGD lr "
        f"{FLAGS.learning_rate}: mean training CE of the last 10 steps")
  for conv_init in FLAGS.inits:
    values = [final_loss(conv_init, int(s), images, labels) for s in FLAGS.seeds]
    print(f"  conv_init={conv_init:10s} CE {np.mean(values):.4f} +- "
          f"{np.std(values) / np.sqrt(len(values)):.4f}  (seeds: "
          f"{', '.join(f'{v:.3f}' for v in values)})", flush=True)


if __name__ == "__main__":
  cli.run(main, "init_proxy.py")
