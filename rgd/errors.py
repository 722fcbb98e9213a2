"""The errors rgd raises on purpose, in one place, importing no TensorFlow.

Each names what is wrong and where (file, record, flag, step), and each maps to an exit status
of the entry points and tools through `exit_status`, which `rgd.cli.run` applies (README "Exit
statuses"):

  ConfigError          a flag, gin file or binding is wrong, or a model file is missing
                       or of the wrong kind                                          exit 2
  DataError            bad input data (npz, TFRecord shards, generated sources) or a
                       model / weights file that cannot be read                      exit 2
  CheckpointError      no checkpoint in the model directory can be restored          exit 2
  StateMismatchError   an evaluation's resume file belongs to other settings         exit 2
  NonFiniteLogitsError the model's clean logits hold NaN or Inf (before any attack)  exit 2
  NonFiniteError       a training step's loss or gradients were NaN or Inf           exit 3
  TooManySkippedSteps  nan_policy='skip_step' skipped too many steps in a row        exit 3

absl's flag errors and `app.UsageError` also exit 2 (`rgd.cli.run`). Any other exception is a
bug: it keeps its traceback and Python's status 1.
"""


class DataError(ValueError):
  """Bad input data; the message names the file and what is wrong."""


class SourceError(DataError):
  """Bad generated-data input; the message names the file."""


class ConfigError(ValueError):
  """A flag, gin file or binding is wrong; the message names it."""


class CheckpointError(RuntimeError):
  """No checkpoint in the model directory can be restored."""


class StateMismatchError(ValueError):
  """The state file belongs to an evaluation with other settings."""


class NonFiniteLogitsError(ValueError):
  """The model's logits of clean images hold NaN or Inf."""


class NonFiniteError(RuntimeError):
  """The loss or the gradients of a step were NaN/Inf; nothing of that state was saved."""


class TooManySkippedSteps(NonFiniteError):
  """Under nan_policy='skip_step', more consecutive steps were skipped than allowed."""


# The table above, as the entry points apply it: first match wins (subclasses included).
EXIT_STATUS = (
    (NonFiniteError, 3),
    (ConfigError, 2),
    (DataError, 2),
    (CheckpointError, 2),
    (StateMismatchError, 2),
    (NonFiniteLogitsError, 2),
)


def exit_status(error):
  """The exit status `error` ends a program with, or None for an unexpected error (a bug)."""
  for kind, status in EXIT_STATUS:
    if isinstance(error, kind):
      return status
  return None
