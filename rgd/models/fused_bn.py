"""BatchNormalization on TF's fused kernel, with Keras' semantics and variables.

Keras 3's `BatchNormalization` builds BN from `tf.nn.moments` and `tf.nn.batch_normalization`:
about ten element-wise ops forward and as many backward, each a pass over the activations.
TF's `FusedBatchNormV3` does the same in one kernel each way (oneDNN on CPU, cuDNN on GPU;
XLA lowers it on TPU). Measured on the 2-core development CPU: forward + backward of one
[128, 32, 32, 64] BN 426 ms -> 154 ms; with it rgd's TRADES-10 step of WRN-10-2 (batch 128)
went from 0.75x to 0.84x PyTorch eager's, before oneDNN took it to 1.32x (README
"Benchmarks"). Same variables (gamma, beta, moving_mean, moving_variance), same config and the
same numbers to float32 rounding (tests/test_models.py), so checkpoints move
between the two layers.

Keras' moving variance is the *biased* batch variance (as Haiku's `hk.BatchNorm`); the fused
kernel returns the Bessel-corrected one for the running average, so it is scaled back by
(n - 1) / n.
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="rgd")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` (axis -1, 4-D inputs) on `tf.nn.fused_batch_norm`;
  anything else (masks, renorm, synchronized, other ranks or axes) takes Keras' own path."""

  def _fusable(self, inputs, mask):
    return (mask is None and not self.renorm and not self.synchronized and
            len(inputs.shape) == 4 and self.axis in (-1, 3))

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask) or not isinstance(training, (bool, type(None))):
      return super().call(inputs, training=training, mask=mask)
    # As Keras: statistics and normalisation in float32 whatever the compute dtype.
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
    beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
    if training and self.trainable:
      y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, epsilon=self.epsilon, is_training=True)[:3]
      n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
      variance = variance * (n - 1.0) / tf.maximum(n, 1.0)   # undo Bessel: Keras' biased var
      momentum = self.momentum
      self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
      self.moving_variance.assign(
          self.moving_variance * momentum + variance * (1.0 - momentum))
    else:
      y = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
          is_training=False)[0]
    return tf.cast(y, self.compute_dtype)


def to_keras_batchnorm(model):
  """`model` with every FusedBatchNormalization replaced by Keras' BatchNormalization of the same
  config, variables and statistics: the fused kernel is a training-time speed-up, and a model
  built from standard layers loads with a plain `keras.models.load_model` in a process that never
  imported rgd (foolbox, ART, a colleague's script). Returns `model` itself when it has no fused
  layer; the copy has the same weights, so the same logits at inference."""
  layers = model._flatten_layers()  # pylint: disable=protected-access
  if not any(isinstance(l, FusedBatchNormalization) for l in layers):
    return model

  def clone(layer):
    if isinstance(layer, FusedBatchNormalization):
      return keras.layers.BatchNormalization.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())

  copy = keras.models.clone_model(model, clone_function=clone)
  copy.set_weights(model.get_weights())
  return copy
