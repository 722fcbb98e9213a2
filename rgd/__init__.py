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

__version__ = "0.1.0"
