"""rgd: adversarially robust image classifiers trained with generated data, in Keras 3.

Modules, one concern each:
  rgd.models      architectures (normalisation inside the model, logits in float32)
  rgd.attacks     attack parts (losses, initialisers, projections, step rules) and attacks
  rgd.data        real data (tfds or npz) as tf.data, generated-data mixing
  rgd.tfrecord    the TFRecord schema of generated sets
  rgd.trades      TRADES / PGD-AT / standard training objectives
  rgd.weight_average  exponential moving average of the weights
  rgd.schedules   learning-rate schedules
  rgd.trainer     the Keras model with the custom train_step
  rgd.train       the training entry point (flags, gin, strategy, loop, checkpoints)
"""

import os as _os

# TensorFlow turns its oneDNN CPU kernels on by default only on some Intel CPUs; elsewhere
# (this AMD EPYC development machine among them) convolutions run on Eigen. PyTorch uses oneDNN
# on every x86 CPU, and with it off rgd's TRADES step was 0.84x PyTorch's; with it on the
# network's forward + backward is about 1.5x faster (README "Benchmarks"). It must be set before
# TensorFlow loads, which `python -m rgd.*` and `tools/` guarantee; set TF_ENABLE_ONEDNN_OPTS=0 to
# keep TF's choice. It changes nothing on GPU or TPU (CPU kernels only).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
