"""Sanity checks of an evaluation, as AutoAttack's `checks.py`: each returns a list of warning
strings (empty when all is well) so the caller can log them and store them in the report.

* `check_randomized`: two forward passes of the same input differ (a randomised defence needs
  EOT, which these attacks do not do).
* `check_logits`: the outputs look like probabilities (rows in [0, 1] summing to 1), which
  flattens the gradients of CE and DLR; pass logits.
* `check_num_classes`: fewer classes than the targeted attacks' targets (`attack.num_targets`)
  or than an attack's loss needs (`attack.min_classes`).
* `check_black_box`: a black-box stage (`attack.black_box`: Square) broke points the white-box
  attacks before it missed, a hint of gradient masking (Athalye et al. 2018).
* `check_output_shape` raises ConfigError: the model must map [B, H, W, C] to logits [B, K].
* `check_finite` raises: NaN/Inf logits (a diverged or broken model) make every attack result
  meaningless.
"""
import numpy as np
import tensorflow as tf

from rgd.errors import ConfigError, NonFiniteLogitsError


def check_finite(logits, source):
  bad = np.flatnonzero(~np.isfinite(np.asarray(logits)).all(1))
  if len(bad):
    raise NonFiniteLogitsError(
        f"{source}: the model returns NaN/Inf logits for {len(bad)} of the {len(logits)} first "
        f"images (first: index {bad[0]}); a diverged training run?")


def check_output_shape(logits, batch, num_classes, source):
  """Raises ConfigError unless `logits` has shape [batch, K] with K >= max(2, num_classes):
  the model given does not fit the dataset."""
  shape = tuple(logits.shape)
  if len(shape) != 2 or shape[0] != batch or shape[1] < max(2, num_classes):
    raise ConfigError(f"{source}: the model must return logits of shape [batch, num_classes] = "
                     f"[{batch}, {num_classes}] (at least 2 classes), got {list(shape)}")


def check_randomized(model_fn, x, atol=1e-5):
  a = tf.cast(model_fn(x), tf.float32).numpy()
  b = tf.cast(model_fn(x), tf.float32).numpy()
  if not np.allclose(a, b, atol=atol, rtol=0):
    return [f"the model gives different outputs for the same input (max difference "
            f"{np.abs(a - b).max():.3g}): it looks randomised, and these attacks use no "
            "expectation over transformation; the robust accuracy may be overestimated"]
  return []


def check_logits(logits, atol=1e-4):
  logits = np.asarray(logits, np.float64)
  if logits.min() >= 0 and logits.max() <= 1 and np.allclose(logits.sum(1), 1, atol=atol):
    return ["the model outputs look like probabilities (in [0, 1], rows sum to 1), not "
            "logits: the attack losses expect logits and their gradients may vanish"]
  return []


def check_num_classes(num_classes, stages):
  out = []
  for stage in stages:
    n = stage.num_targets
    if n is not None and n > num_classes - 1:
      out.append(f"{stage.name} asks for {n} target classes but the model has only "
                 f"{num_classes} classes; it uses {num_classes - 1}")
    if num_classes < stage.min_classes:
      out.append(f"{stage.name} needs at least {stage.min_classes} classes (its loss uses the "
                 f"{stage.min_classes} largest logits)")
  return out


def check_black_box(stages, robust_after):
  """`robust_after[i]`: robust flags after stage i. Warns when a black-box stage lowered them."""
  out = []
  for i, stage in enumerate(stages):
    if stage.black_box and i > 0:
      broken = int(robust_after[i - 1].sum() - robust_after[i].sum())
      if broken:
        out.append(f"the black-box {stage.name} attack broke {broken} point(s) that the "
                   "white-box attacks before it missed: this hints at gradient masking; the "
                   "gradient-based robust accuracy should not be trusted on its own")
  return out
