"""Run by test_sample_job.py in a fresh process (logical devices must be set before TF starts):
samples the same global indices from a tiny EDM with 1 replica, with 2 replicas (2 logical CPU
devices, MirroredStrategy) and split over 2 workers' chunk folders; prints what matched."""
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from rgd.datagen import sample_job  # noqa: E402  pylint: disable=g-import-not-at-top
from rgd.edm import unet


def tiny_net():
  tf.keras.utils.set_random_seed(0)
  net = unet.edm_unet(image_shape=(8, 8, 3), num_classes=3, model_channels=4,
                      channel_mult=(1,), num_blocks=1, attn_resolutions=(), dropout=0.0)
  # EDM initialises every block's conv1 and the output conv at ~1e-5 (F ~ 0); give them
  # weights so that F and the labels matter.
  for layer in net.layers:
    if layer.name.endswith(("_conv1", "_aux_conv")):
      for v in layer.weights:
        v.assign(tf.random.stateless_normal(v.shape, [1, 2]) * 0.05)
  return net


def main():
  n, kw = 10, dict(num_classes=3, seed=5, batch_per_device=2, num_steps=2)
  one = sample_job.Sampler(tiny_net(), **kw)
  strategy = sample_job.local_strategy()
  with strategy.scope():
    net2 = tiny_net()
  two = sample_job.Sampler(net2, strategy=strategy, **kw)
  a = one.sample(np.arange(n))
  b = two.sample(np.arange(n))
  print("replicas", one.replicas, two.replicas)
  print("replicas_equal", bool(np.array_equal(a, b)), "distinct_images",
        len({im.tobytes() for im in a}), "pixel_std", float(a.std()))
  with tempfile.TemporaryDirectory() as tmp:
    paths, label_path = sample_job.sample_to_folder(one, os.path.join(tmp, "w1"), n, 3)
    whole = np.concatenate([np.load(p) for p in paths])
    parts = {}
    for w in range(2):
      paths, _ = sample_job.sample_to_folder(two, os.path.join(tmp, f"w{w}of2"), n, 3, w, 2)
      for (_, start, stop), p in zip(sample_job.chunk_ranges(n, 3, w, 2), paths):
        parts.update(zip(range(start, stop), np.load(p)))
    split = np.stack([parts[i] for i in range(n)])
    print("workers_equal", bool(np.array_equal(whole, a) and np.array_equal(split, a)),
          "labels", np.load(label_path).tolist())
  return 0


if __name__ == "__main__":
  sys.exit(main())
