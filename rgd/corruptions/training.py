"""Training rgd's own corruption networks ('edsr_cifar', 'cae_cifar') to reconstruct their input:
the c_phi of AdA (seed 003) without the published weights, for `python -m
rgd.train_corruption_net`. The weights go to MODEL_DIR/weights.npz,
the file `make_ada.weights_path` and DeepAugment read; MODEL_DIR/checkpoints resumes a run."""
import os
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from rgd.data import datasets
from rgd.corruptions import networks

LOSSES = {"l1": lambda x, y: tf.reduce_mean(tf.abs(x - y)),
          "mse": lambda x, y: tf.reduce_mean(tf.square(x - y))}


@gin.configurable(denylist=["model_dir"])
def train_corruption_net(model_dir, network="edsr_cifar", network_kwargs=None, dataset=gin.REQUIRED,
                         batch_size=64, num_steps=20_000, learning_rate=1e-4, loss="l1",
                         checkpoint_every=1000, log_every=100, seed=0, data_dir=None,
                         images=None):
  """Adam on the reconstruction loss (EDSR: L1 and lr 1e-4 as Lim et al. 2017; CAE: MSE as
  Theis et al. 2017, without their rate term). Returns the list of logged losses.
  `images` (uint8 [N, H, W, 3]) replaces `dataset` (tests)."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
  net = networks.get_network(network, **(network_kwargs or {}))
  if images is None:
    images, _ = datasets.load_split(dataset, "train_full", data_dir=data_dir)
  labels = np.zeros(len(images), np.int64)
  ds = datasets.make_train_dataset(images, labels, 1, batch_size, seed=seed, augment=True)
  iterator = iter(ds)
  init = net.init(seed)
  names = sorted(init)
  weights = [tf.Variable(init[k], name=k.replace("/", "_")) for k in names]
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build(weights)
  ckpt = tf.train.Checkpoint(weights=weights, optimizer=optimizer, iterator=iterator)
  manager = tf.train.CheckpointManager(ckpt, os.path.join(model_dir, "checkpoints"), 3)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info("Resumed from %s", manager.latest_checkpoint)
  loss_fn = LOSSES[loss]

  @tf.function
  def step(batch):
    x = datasets.to_float(batch["image"][0])
    with tf.GradientTape() as tape:
      value = loss_fn(net.apply(dict(zip(names, weights)), x), x)
    optimizer.apply(tape.gradient(value, weights), weights)
    return value

  history, total, count, t0 = [], 0.0, 0, time.time()
  while int(optimizer.iterations) < num_steps:
    total += float(step(next(iterator)))
    count += 1
    it = int(optimizer.iterations)
    if it % log_every == 0 or it == num_steps:
      history.append(total / count)
      logging.info("step %d/%d reconstruction %s %.5f (%.1f img/s)", it, num_steps, loss,
                   history[-1], count * batch_size / (time.time() - t0))
      total, count, t0 = 0.0, 0, time.time()
    if it % checkpoint_every == 0 or it == num_steps:
      manager.save(checkpoint_number=it)
  networks.save_params(os.path.join(model_dir, "weights.npz"),
                       {k: w.numpy() for k, w in zip(names, weights)})
  return history
