"""Training rgd's own corruption networks ('edsr_cifar', 'cae_cifar') to reconstruct their input:
the c_phi of AdA (seed 003) without the published weights, for `python -m
rgd.train_corruption_net`. The weights go to MODEL_DIR/weights.npz, the file
`make_ada.weights_path` and DeepAugment read.

The loop is rgd's one skeleton (rgd.runtime.loop), as for the classifier and EDM: the strategy's
scope and replicas, MODEL_DIR/checkpoints (weights, Adam state, input iterator) restored past a
damaged newest checkpoint, SIGTERM (checkpoint the step reached, then stop; several workers agree
on it), the NaN policy 'stop', MODEL_DIR/operative_config.gin and TensorBoard scalars in
MODEL_DIR/train. `CorruptionNetTask` supplies the step and the export.
"""
from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from rgd.data import datasets
from rgd.corruptions import networks
from rgd.errors import ConfigError
from rgd.runtime import fileio, loop as skeleton, nan_policy, strategy as strategy_lib

LOSSES = {"l1": lambda x, y: tf.reduce_mean(tf.abs(x - y)),
          "mse": lambda x, y: tf.reduce_mean(tf.square(x - y))}
WEIGHTS_FILE = "weights.npz"


@gin.configurable(denylist=["model_dir", "strategy"])
def train_corruption_net(model_dir, network="edsr_cifar", network_kwargs=None, dataset=gin.REQUIRED,
                         batch_size=64, num_steps=20_000, learning_rate=1e-4, loss="l1",
                         checkpoint_every=1000, log_every=100, seed=0, data_dir=None,
                         images=None, keep_checkpoints=3, strategy=None):
  """Adam on the reconstruction loss (EDSR: L1 and lr 1e-4 as Lim et al. 2017; CAE: MSE as
  Theis et al. 2017, without their rate term). Returns the list of logged losses (means over
  the interval's images). `images` (uint8 [N, H, W, 3]) replaces `dataset` (tests)."""
  if loss not in LOSSES:
    raise ConfigError(f"train_corruption_net.loss={loss!r}: expected one of {sorted(LOSSES)}")
  strategy = strategy or tf.distribute.get_strategy()
  net = networks.get_network(network, **(network_kwargs or {}))
  if images is None:
    images, _ = datasets.load_split(dataset, "train_full", data_dir=data_dir)
  task = CorruptionNetTask(model_dir, strategy, net, images, batch_size, num_steps,
                           learning_rate, LOSSES[loss], seed)
  logging.info("Training corruption network %s (%d parameters) on %d images: %d steps at batch "
               "%d on %d replica(s), %s loss. Model directory %s.", network,
               sum(int(np.prod(w.shape)) for w in task.weights), len(images), num_steps,
               batch_size, strategy.num_replicas_in_sync, loss, model_dir)
  cadence = skeleton.Cadence(log_every=log_every, checkpoint_every=checkpoint_every,
                             keep_checkpoints=keep_checkpoints)
  result = skeleton.run(task, model_dir, strategy, cadence, nan_policy.NanPolicy("stop"))
  return [logs["loss"] for logs in result.history]


class CorruptionNetTask(skeleton.Task):
  """The reconstruction step of a corruption network (its weights a flat list of variables,
  named after its parameters) and the export of weights.npz at the end."""

  def __init__(self, model_dir, strategy, net, images, batch_size, num_steps, learning_rate,
               loss_fn, seed):
    self.model_dir, self.strategy, self.total_steps = model_dir, strategy, int(num_steps)
    num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
    labels = np.zeros(len(images), np.int64)
    self.iterator = iter(datasets.make_train_dataset(
        images, labels, 1, batch_size, num_replicas=strategy.num_replicas_in_sync,
        num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id, seed=seed,
        augment=True))
    self.separate_input_state = num_pipelines > 1
    init = net.init(seed)
    self.names = sorted(init)
    with strategy.scope():
      self.weights = [tf.Variable(init[k], name=k.replace("/", "_")) for k in self.names]
      self.optimizer = keras.optimizers.Adam(learning_rate)
      self.optimizer.build(self.weights)
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
      x = datasets.to_float(batch["image"])
      with tf.GradientTape() as tape:
        value = loss_fn(net.apply(dict(zip(self.names, self.weights)), x), x)
        # The mean over this replica's images; the all-reduce sums the replicas' gradients.
        scaled = value / replicas if replicas > 1 else value
      self.optimizer.apply(tape.gradient(scaled, self.weights), self.weights)
      count = tf.cast(tf.shape(x)[0], tf.float32)
      return {"total": value * count, "count": count}

    @tf.function
    def step(batch):
      out = strategy.run(replica_step, args=(batch,))
      return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
              for k, v in out.items()}
    self._step = step

  def checkpoint_objects(self):
    return dict(weights=self.weights, optimizer=self.optimizer)

  def current_step(self):
    return int(self.optimizer.iterations.numpy())

  def step(self):
    return self._step(strategy_lib.distribute_stacked(self.strategy, next(self.iterator)))

  def interval_logs(self, step, last):
    del step, last
    return dict(learning_rate=float(self.optimizer.learning_rate))

  def finish(self, step):
    del step
    networks.save_params(fileio.join(self.model_dir, WEIGHTS_FILE),
                         {k: w.numpy() for k, w in zip(self.names, self.weights)})
