"""What rgd.train prints when a run ends: where its outputs are, and the command to run next.

A first-time user (README "Set up", command 1) should not have to read the docs to find the
exported model or to know that robust accuracy comes from rgd.evaluate, not from training.
"""
import os

import tensorflow as tf

# The suite the next command names: AutoAttack (standard), RobustBench's number; `aa+mt` is the
# stronger one seeds 000/001 report (docs/evaluation.md).
NEXT_SUITE = "autoattack"


def summary(model_dir, suite=NEXT_SUITE):
  """Lines naming model.keras/model.json, last.keras, the TensorBoard logs and the next
  command, or None before the run's end exported last.keras (stopped by SIGTERM)."""
  if not tf.io.gfile.exists(os.path.join(model_dir, "last.keras")):
    return None

  def join(name):
    return os.path.join(model_dir, name)
  lines = [
      f"model:  {join('model.keras')} (the weight-averaged model with the best validation "
      "robust accuracy)",
      f"report: {join('model.json')} (its step and validation accuracies); "
      f"{join('last.keras')} is the one at the end",
      f"logs:   {join('train')}, {join('validation')} (tensorboard --logdir {model_dir})",
      f"next:   python -m rgd.evaluate --model_dir={model_dir} --suite={suite}",
  ]
  return "\n".join(lines)
