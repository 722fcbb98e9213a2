"""Learning-rate schedules (docs/recipes.md "TRADES training").

Peak LR follows linear scaling: base_learning_rate * batch / 256 (0.1 per 256: 0.4 at batch
1024). 'cosine': linear warm-up for `warmup_steps`, then cosine decay to 0 (seeds 000/001).
'piecewise': constant, then x0.1 at each boundary fraction (the step schedule seed 000 uses
without generated data, x0.1 at two-thirds). 'constant'.
"""
import gin
import keras
import tensorflow as tf
from rgd.errors import ConfigError

SCHEDULES = ("cosine", "piecewise", "constant")


@keras.saving.register_keras_serializable(package="rgd")
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then `peak * 0.1**k` after the k-th boundary."""

  def __init__(self, peak, warmup_steps, boundaries):
    self.peak, self.warmup_steps, self.boundaries = float(peak), int(warmup_steps), list(
        boundaries)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    lr = tf.constant(self.peak, tf.float32)
    for b in self.boundaries:
      lr = tf.where(step >= b, lr * 0.1, lr)
    if self.warmup_steps:
      lr = tf.where(step < self.warmup_steps, self.peak * (step + 1.) / self.warmup_steps, lr)
    return lr

  def get_config(self):
    return dict(peak=self.peak, warmup_steps=self.warmup_steps, boundaries=self.boundaries)


@gin.configurable(denylist=["batch_size", "total_steps", "steps_per_epoch"])
def learning_rate_schedule(batch_size, total_steps, steps_per_epoch, schedule="cosine",
                           base_learning_rate=0.1, warmup_epochs=10, boundaries=(2. / 3,)):
  """Builds the schedule. `boundaries` are fractions of training (piecewise only)."""
  if schedule not in SCHEDULES:
    raise ConfigError(f"Unknown schedule {schedule!r}; expected one of {SCHEDULES}")
  peak = base_learning_rate * batch_size / 256.
  warmup = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  if schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, decay_steps=max(total_steps - warmup, 1),
        alpha=0.0, warmup_target=peak if warmup else None, warmup_steps=warmup)
  if schedule == "piecewise":
    return WarmupPiecewise(peak, warmup, [int(f * total_steps) for f in boundaries])
  return WarmupPiecewise(peak, warmup, [])
