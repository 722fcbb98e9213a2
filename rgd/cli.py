"""What the entry points share: their common flags and the gin start.

Entry points (`rgd.train`, `rgd.evaluate`, `rgd.certify`, `rgd.train_generator`,
`rgd.train_corruption_net`) hold their own flags and `main` and import this module, never one
another. Flags are defined here once so that several entry points can be imported into one
process (tests, notebooks) without absl's duplicate-flag error; library code takes plain
arguments and never reads FLAGS (STYLE.md).
"""
import sys

from absl import app, flags, logging
import gin
import tensorflow as tf

from rgd.errors import ConfigError

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The run's directory: rgd.train writes checkpoints, "
                    "exports and events there; rgd.evaluate and rgd.certify read "
                    "DIR/model.keras and DIR/model.json.")
flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. \"train_and_evaluate."
                          "batch_size=128\", \"DATASET='npz:/data/cifar'\" or "
                          "\"aa_mt_suite.mt_restarts=20\".")
flags.DEFINE_string("tpu", None, "TPU address, or 'local'; unset: GPUs or CPU.")


def define_model_flags():
  """The flags of the entry points that read a trained model (rgd.evaluate, rgd.certify), with
  one meaning in both. Idempotent: both modules call it when they are imported."""
  if "model" in FLAGS:
    return
  flags.DEFINE_string("model", None, "A .keras model taking [0, 1] images, returning logits.")
  flags.DEFINE_string("dataset", None, "tfds name (cifar10, cifar100, svhn_cropped) or npz:DIR "
                      "(rgd.data.datasets). Default: what --model_dir was trained on "
                      "(model.json), else cifar10.")
  flags.DEFINE_string("split", "test", "Split to evaluate (test, validation, train, "
                      "train_full).")
  flags.DEFINE_string("eps", None, "Radius, a number or a fraction like 8/255. Default: the "
                      "run's (model.json), else 8/255 (L2 certificates: 36/255).")
  flags.DEFINE_integer("num_examples", None, "Evaluate the first N examples (default: all).")
  flags.DEFINE_integer("batch_size", 500, "Examples per batch.")
  flags.DEFINE_string("output_dir", None, "Where the report goes (default: MODEL_DIR/eval or "
                      "the model file's folder/eval).")


def define_norm_flag():
  """--norm, shared by rgd.evaluate and rgd.convert (idempotent, as define_model_flags)."""
  if "norm" not in FLAGS:
    flags.DEFINE_string("norm", None, "linf or l2. Default: the run's (model.json), else linf.")


def parse_gin(files, bindings):
  """Parses gin files and bindings, turning gin's errors into ones that name the culprit."""
  for path in files:
    if not tf.io.gfile.exists(path):
      raise ConfigError(f"gin file not found: {path}")
  try:
    gin.parse_config_files_and_bindings(files, None, finalize_config=False)
  except (ValueError, IOError) as e:
    raise ConfigError(f"error in gin file(s) {files}: {e}") from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError) as e:
      raise ConfigError(f"bad gin binding {binding!r}: {e}") from e
  gin.finalize()


def fail(prog, error, status):
  """Ends the program with `status` and one line naming what is wrong (no traceback)."""
  logging.error("%s", error)
  print(f"{prog}: {error}", file=sys.stderr)
  sys.exit(status)


def parse_gin_or_exit(prog, require_model_dir=True):
  """The start every gin entry point shares: --model_dir is required (where asked), and a bad
  gin file or binding exits with status 2 and a message that names it instead of a
  traceback."""
  if require_model_dir and not FLAGS.model_dir:
    raise app.UsageError("--model_dir is required")
  try:
    parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  except ConfigError as e:
    fail(prog, e, 2)
