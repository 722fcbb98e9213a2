"""What the entry points and tools share: their common flags, the gin start, and one exit
contract (`run`).

Entry points (`rgd.train`, `rgd.evaluate`, `rgd.certify`, `rgd.train_generator`,
`rgd.train_corruption_net`, `rgd.convert`) hold their own flags and `main` and import this
module, never one another. The common flags are defined here once (`define_flags`, idempotent)
so that several entry points can be imported into one process (tests, notebooks) without absl's
duplicate-flag error; library code takes plain arguments and never reads FLAGS, so that tests and
notebooks call it without absl parsing.

Exit statuses (README "Exit statuses"): every entry point and every tool with a `main` starts
through `run`, which ends the program with `rgd.errors.exit_status` of what went wrong and one
line naming it: 0 done (or checkpointed after SIGTERM), 2 a bad flag, gin file, binding, data or
model file, 3 a non-finite training step. Any other exception is a bug and keeps its traceback.
This module imports no TensorFlow at import time: tools that must import PyTorch first use it.
"""
import functools
import os
import sys

from absl import app, flags
import gin

from rgd import errors
from rgd.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags():
  """--model_dir, --gin_file, --gin_bindings, --tpu: the flags of the entry points (idempotent;
  each entry point calls it when it is imported)."""
  if "gin_file" in FLAGS:
    return
  flags.DEFINE_string("model_dir", None, "The run's directory: rgd.train writes checkpoints, "
                      "exports and events there; rgd.evaluate and rgd.certify read "
                      "DIR/model.keras and DIR/model.json.")
  flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. \"train_and_evaluate."
                            "batch_size=128\", \"DATASET='npz:/data/cifar'\" or "
                            "\"aa_mt_suite.mt_restarts=20\".")
  flags.DEFINE_string("tpu", None, "TPU address, or 'local'; unset: GPUs or CPU.")


def define_model_flags():
  """The flags of the entry points that read a trained model (rgd.evaluate, rgd.certify,
  rgd.convert), with one meaning in all. Idempotent: each module calls it when imported."""
  define_flags()
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
  flags.DEFINE_integer("num_examples", None, "Evaluate the first N examples (default: all).",
                       lower_bound=1)
  flags.DEFINE_integer("batch_size", 500, "Examples per batch.", lower_bound=1)
  flags.DEFINE_string("output_dir", None, "Where the report goes (default: MODEL_DIR/eval or "
                      "the model file's folder/eval).")


def define_io_flags():
  """--input and --output, shared by the converters (rgd.convert, tools/convert_corruption_net.py)
  so that both can be imported into one process (idempotent, as define_model_flags)."""
  if "input" not in FLAGS:
    flags.DEFINE_string("input", None, "The file to convert: a checkpoint or state dict "
                        "(.pt/.pth/.state, .safetensors or .npy).")
  if "output" not in FLAGS:
    flags.DEFINE_string("output", None, "What to write: a run directory or a .pt/.pth/"
                        ".safetensors file (rgd.convert), an .npz (convert_corruption_net).")


def define_norm_flag():
  """--norm, shared by rgd.evaluate and rgd.convert (idempotent, as define_model_flags)."""
  if "norm" not in FLAGS:
    flags.DEFINE_enum("norm", None, ["linf", "l2"], "Default: the run's (model.json), else "
                      "linf.")


def parse_gin(files, bindings):
  """Parses gin files and bindings, turning gin's errors into ones that name the culprit."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (module docstring)
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


def parse_gin_or_exit(prog=None, require_model_dir=True):
  """The start every gin entry point shares: --model_dir is required (where asked) and the gin
  files and bindings are parsed; a missing --model_dir or a bad gin file or binding raises
  ConfigError, which `run` turns into exit status 2. (`prog` is unused: `run` names the
  program.)"""
  del prog
  if require_model_dir and not FLAGS.model_dir:
    raise ConfigError("--model_dir is required")
  parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)


def fail(prog, error, status):
  """Ends the program with `status` and one line on stderr naming what is wrong (no
  traceback). A message of several lines is joined into one."""
  text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
  print(f"{prog}: {text or type(error).__name__}", file=sys.stderr, flush=True)
  sys.exit(status)


def status_of(error):
  """`rgd.errors.exit_status`, plus absl's flag and usage errors (exit 2)."""
  if isinstance(error, (app.UsageError, flags.Error)):
    return 2
  return errors.exit_status(error)


def _guarded(main, prog, argv):
  try:
    return main(argv)
  except Exception as e:  # pylint: disable=broad-except  re-raised unless rgd raised it on purpose
    status = status_of(e)
    if status is None:
      raise
    fail(prog, e, status)


def _parse_flags(prog, argv):
  try:
    if FLAGS.is_parsed():  # a second run in one process (tests) starts from the defaults
      FLAGS.unparse_flags()
    return FLAGS(argv)
  except flags.Error as e:
    fail(prog, e, 2)


def run(main, prog=None, argv=None, absl_flags=True):
  """Runs `main` under the exit contract (module docstring) and exits with its status.

  absl_flags=True: `app.run(main)` with argv (default sys.argv) parsed into FLAGS; a bad flag
  value (also one an absl validator or bound refuses) exits 2 with one line. absl_flags=False
  (argparse tools): `main(argv)` with argv default sys.argv[1:]; argparse exits 2 on a bad
  argument itself. In both, `main`'s return value is the status (None: 0).
  """
  prog = prog or os.path.basename(sys.argv[0])
  if absl_flags:
    app.run(functools.partial(_guarded, main, prog), argv=argv,
            flags_parser=functools.partial(_parse_flags, prog))
  else:
    sys.exit(_guarded(main, prog, sys.argv[1:] if argv is None else argv) or 0)
