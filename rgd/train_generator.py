r"""Trains a class-conditional EDM generator (Karras et al. 2022) on a data set's training images.

    python -m rgd.train_generator --gin_file=gin/edm_cifar10.gin --model_dir=/runs/edm
    python -m rgd.train_generator --gin_file=gin/edm_debug.gin --model_dir=/tmp/edm \
        --gin_bindings="DATASET='npz:/tmp/demo/data'"

EDM's optimisation (Adam with lr ramp-up, EMA half-life, batch 512, 200 Mimg for CIFAR-10;
rgd/edm/training.py cites NVlabs/edm for each) on rgd's strategies: one code path for
CPU, GPUs, TPU (--tpu) and several workers (TF_CONFIG), as rgd.train. Re-running the command
resumes exactly where the last checkpoint left off; SIGTERM checkpoints and exits. DIR then
holds:
  checkpoints/                   network, EMA network, Adam state, input iterator, dropout RNG
  generator.json, generator.npz  the EMA network (rgd.edm.store), written with every
                                 checkpoint: what `make_tfrecords.py --generator=edm:DIR` samples
  operative_config.gin, train/   the gin configuration in force; TensorBoard losses and sample
                                 grids (one row per class, from the EMA network)
"""
import os

from absl import flags
import tensorflow as tf

from rgd import cli
from rgd.runtime import strategy as strategy_lib
from rgd.edm import store, training

FLAGS = flags.FLAGS
cli.define_flags()  # --model_dir, --gin_file, --gin_bindings, --tpu


def main(argv):
  del argv
  cli.parse_gin_or_exit("rgd.train_generator")
  tf.config.set_soft_device_placement(True)
  strategy = strategy_lib.get_strategy(FLAGS.tpu)
  history = training.train_generator(FLAGS.model_dir, strategy)
  if history:
    print(f"EDM loss {history[0]:.4f} -> {history[-1]:.4f}; generator in "
          f"{os.path.join(FLAGS.model_dir, store.CONFIG_FILE)}")


if __name__ == "__main__":
  cli.run(main, "rgd.train_generator")
