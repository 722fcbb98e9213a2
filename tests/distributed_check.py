"""Run by test_multi_worker.py (its `mirrored` fixture) in a fresh process (logical devices must
be set before TF starts): two TRADES steps on one global batch under the default strategy and
under MirroredStrategy with 2 logical CPU devices; prints the largest weight difference."""
import sys

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=g-import-not-at-top

from rgd.runtime import strategy as strategy_lib  # noqa: E402
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer, make_distributed_step  # noqa: E402


def build():
  # No BatchNorm: per-replica batch statistics would differ by design (as in DeepMind's and
  # PyTorch DDP's default), and this check is about loss scaling and gradient aggregation.
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, activation="swish")(inputs)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(3)(x))


def run(strategy, batch, steps=2, stacked=None):
  """`stacked`: this worker's part, [local replicas, b, ...] (multi-worker); default: `batch`
  split over the local replicas."""
  with strategy.scope():
    net, avg = build(), build()
    trainer = RobustTrainer(net, objectives.Objective(kind="trades", attack_steps=3),
                            global_batch_size=8, weight_decay=5e-4, seed=1)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.9)
  step = make_distributed_step(strategy, trainer, ema)
  r = strategy_lib.local_replicas(strategy)
  if stacked is None:
    stacked = strategy_lib.stack_for_replicas(strategy, batch) if r > 1 else (
        tf.nest.map_structure(lambda t: t[None], batch))
  logs = None
  for _ in range(steps):
    logs = step(strategy_lib.distribute_stacked(strategy, stacked))
  return [v.numpy() for v in net.weights + avg.weights], {k: float(v) for k, v in logs.items()}


def main():
  """Also saves the mirrored run's weights to argv[1] (.npz) when given."""
  batch = {"image": tf.random.stateless_uniform([8, 8, 8, 3], [0, 1]),
           "label": tf.one_hot(tf.range(8) % 3, 3)}
  single, logs1 = run(tf.distribute.get_strategy(), batch)
  mirrored, logs2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), batch)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(single, build().get_weights()))
  diff = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
  if len(sys.argv) > 1:
    np.savez(sys.argv[1], *mirrored)
  print(f"max_weight_change {moved:.6g}")
  print(f"max_weight_diff {diff:.6g}")
  print(f"loss_single {logs1['total']:.6f} loss_mirrored {logs2['total']:.6f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
