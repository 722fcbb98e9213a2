"""rgd: adversarially robust image classifiers trained with generated data, in Keras 3.

Rooms by purpose; imports run one way, from the entry points down to the pure parts:

  entry points   train, evaluate, certify, train_generator, train_corruption_net, convert
                 (DeepMind/RobustBench PyTorch checkpoints in and out): flags and `main` only;
                 `cli` holds what they share (common flags, gin start, exits)
  training/      the classifier's part of the loop, the trainer's step, objectives (a protocol
                 and a registry: TRADES, PGD-AT, MART, standard, GloRo, l_inf-dist; corruption
                 and JS wrappers), validation, optimizers, schedules
  evaluation/    attack suites run as cascades, model checks, per-stage resume, reports of
                 robust accuracy, CIFAR-10-C and certified accuracy
  datagen/       generated data: sources, labelling, shard writers, Beam, sampling a generator
                 into records, FID and feature extractors
  interop/       published PyTorch checkpoints in and out (classifiers; guided-diffusion's ADM),
                 safe readers of weight files
  edm/           the EDM generator: U-Net, preconditioning and loss, Heun sampler, training;
                 the 64x64 ADM with iDDPM preconditioning and the ImageNet class map
  data/          real data as tf.data (tfds, npz), the TFRecord schema, shard checks
  runtime/       the one training-loop skeleton, strategy, checkpoints, preemption (SIGTERM,
                 agreed across workers), the NaN policy, the weight average, file I/O through
                 gfile, seeds, progress, fault injection
  corruptions/   AdA, DeepAugment and their corruption networks (seed 003)
  certified/     certifiable layers, models and certificates (seed 004)
  augment/       batch augmentations (CutMix, MixUp, AutoAugment, AugMix, ...)
  attacks/       attack parts and attacks (PGD, APGD, MultiTargeted, FAB, Square): pure
  models/        architectures; normalisation inside the model, float32 logits: pure
  errors         the errors rgd raises on purpose, and their exit statuses
  bench/         benchmarks behind tools/benchmark.py
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
