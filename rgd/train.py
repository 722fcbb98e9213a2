r"""Trains a robust classifier: `python -m rgd.train --gin_file=gin/debug.gin --model_dir=DIR`.

One code path for TPU (`--tpu=ADDR|local`), one or several GPUs, several workers (TF_CONFIG) or
the CPU. Re-running the same command resumes from the last checkpoint in DIR. SIGTERM writes a
checkpoint and exits cleanly. DIR then holds:
  checkpoints/          full training state (both models, optimizer, input iterator, step)
  model.keras           the weight-averaged model with the best validation robust accuracy
                        (the final one when there is no validation set); model.json describes it
  last.keras            the weight-averaged model at the end of training
  operative_config.gin  the gin configuration in force
  train/, validation/   TensorBoard events
"""

from absl import flags, logging
import tensorflow as tf

from rgd import cli
from rgd.runtime import strategy as strategy_lib
from rgd.training import run_summary
from rgd.training.loop import train_and_evaluate

FLAGS = flags.FLAGS
cli.define_flags()  # --model_dir, --gin_file, --gin_bindings, --tpu


def main(argv):
  del argv
  cli.parse_gin_or_exit("rgd.train")
  tf.config.set_soft_device_placement(True)
  strategy = strategy_lib.get_strategy(FLAGS.tpu)
  logs = train_and_evaluate(FLAGS.model_dir, strategy)
  logging.info("Done: %s", {k: round(v, 4) for k, v in logs.items()})
  if strategy_lib.is_chief(strategy):
    done = run_summary.summary(FLAGS.model_dir)
    if done:
      print(done, flush=True)


if __name__ == "__main__":
  cli.run(main, "rgd.train")
