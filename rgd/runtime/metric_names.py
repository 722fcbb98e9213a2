"""The names of the values the training step returns and the loop logs, shared by
rgd.training.trainer, rgd.training.loop and rgd.training.validation (one definition each, no
string contract between files).

The step returns per-replica sums over examples: every loss part of the objective under its
own name (TOTAL among them), `CLEAN_CORRECT` / `ADV_CORRECT` counts and the example `COUNT`;
the loop divides the interval's sums by the count and renames each `*_correct` to
`*_accuracy` (`accuracy_name`). `SKIPPED` (1 for a skipped step) and `NONFINITE_GRADIENTS`
are step flags summed over replicas; `EMA_DECAY` is the one per-step value, not a sum.
"""
TOTAL = "total"                  # the loss part that is minimised; logged as LOSS
LOSS = "loss"
COUNT = "count"                  # examples of the step (the divisor of every mean)
CLEAN_CORRECT = "clean_correct"
ADV_CORRECT = "adv_correct"
SKIPPED = "skipped"
NONFINITE_GRADIENTS = "nonfinite_gradients"
EMA_DECAY = "ema_decay"

_CORRECT, _ACCURACY = "_correct", "_accuracy"


def accuracy_name(name):
  """The logged name of a summed value: `clean_correct` -> `clean_accuracy`; others as is."""
  if name.endswith(_CORRECT):
    return name[:-len(_CORRECT)] + _ACCURACY
  return name
