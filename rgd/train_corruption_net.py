r"""Trains rgd's own corruption networks ('edsr_cifar', 'cae_cifar') to reconstruct their input:
the c_phi of AdA when the published networks' weights are not at hand.

    python -m rgd.train_corruption_net --gin_file=gin/edsr.gin --model_dir=/runs/edsr
    python -m rgd.train_corruption_net --gin_file=gin/cae.gin --model_dir=/runs/cae

Seed 003 (like DeepAugment) started from the *published* EDSR-baseline x4 (super-resolution,
DIV2K) and CAE (image compression) checkpoints; tools/convert_corruption_net.py converts them
('edsr_baseline_x4', 'deepaugment_cae'). This entry point gives a network that reproduces
CIFAR images instead, another corruption distribution (docs/corruptions.md). The weights go to
MODEL_DIR/weights.npz (through tf.io.gfile), the file `make_ada.weights_path` and DeepAugment
read. The loop is rgd.train's (rgd.runtime.loop): one code path for CPU, GPUs, TPU (--tpu) and
several workers (TF_CONFIG); running the command again resumes from MODEL_DIR/checkpoints
(weights, Adam state, input iterator); SIGTERM checkpoints and exits; MODEL_DIR also holds
operative_config.gin and TensorBoard scalars (train/).
"""
import os

from absl import flags
import tensorflow as tf

from rgd import cli
from rgd.corruptions.training import train_corruption_net
from rgd.runtime import strategy as strategy_lib

FLAGS = flags.FLAGS
cli.define_flags()  # --model_dir, --gin_file, --gin_bindings, --tpu


def main(argv):
  del argv
  cli.parse_gin_or_exit("rgd.train_corruption_net")
  tf.config.set_soft_device_placement(True)
  strategy = strategy_lib.get_strategy(FLAGS.tpu)
  history = train_corruption_net(FLAGS.model_dir, strategy=strategy)
  weights = os.path.join(FLAGS.model_dir, "weights.npz")
  if history:
    print(f"reconstruction loss {history[0]:.5f} -> {history[-1]:.5f}; weights in {weights}")
  else:  # re-run on a finished run: nothing left to train
    print(f"already trained; weights in {weights}")


if __name__ == "__main__":
  cli.run(main, "rgd.train_corruption_net")
