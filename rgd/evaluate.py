r"""Robust accuracy of a trained model: `python -m rgd.evaluate --model_dir=DIR`.

    python -m rgd.evaluate --model_dir=runs/wrn28 --suite=aa+mt --norm=linf --eps=8/255 \
        --num_examples=10000
    python -m rgd.evaluate --model=any_model.keras --dataset=npz:DIR --suite=autoattack

`--model_dir` loads DIR/model.keras (the exported weight-averaged model) and the checkpoint step
from DIR/model.json; `--model` loads any Keras model that takes [0, 1] images and returns
logits. Suites (rgd.attacks.cascade): `aa+mt` (seeds 000/001), `autoattack` (AutoAttack
standard), `pgd40`; their parameters can be changed with gin, e.g.
`--gin_bindings="aa_mt_suite.mt_restarts=20"`.

Writes to --output_dir (default DIR/eval): `<name>.json` (clean and robust accuracy, accuracy
after each stage, time per stage, settings, versions, warnings), `<name>.npz` (per-example
flags and the adversarial examples) and TensorBoard scalars; <name> is
`eval_<suite>_<norm>_<eps>`. Deterministic for a given --seed.
"""
import json
import os
import platform
import sys
import time

from absl import app, flags, logging
import gin
import keras
import numpy as np
import tensorflow as tf

import rgd
from rgd import cli_flags  # noqa: F401  (--model_dir, --gin_file, --gin_bindings)
from rgd import data, eval_state, fileio, models  # noqa: F401  (models: layers the model uses)
from rgd.attacks import cascade, checks
from rgd.progress import Progress

NORMS = ("linf", "l2")


def parse_eps(text, flag="--eps"):
  """'8/255', '0.5' or a number -> float in (0, 1] (images are in [0, 1])."""
  try:
    if isinstance(text, str) and "/" in text:
      num, den = text.split("/")
      value = float(num) / float(den)
    else:
      value = float(text)
  except (ValueError, ZeroDivisionError) as e:
    raise ValueError(f"{flag}={text!r} is not a number or a fraction like 8/255") from e
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{flag}={text!r} must be in (0, 1]: images are in [0, 1]")
  return value


def load_model(model_dir=None, model_path=None):
  """Returns (model, path, checkpoint step or None)."""
  if bool(model_dir) == bool(model_path):
    raise ValueError("pass exactly one of --model_dir and --model")
  path = model_path or fileio.join(model_dir, "model.keras")
  if not tf.io.gfile.exists(path):
    flag = "--model" if model_path else "--model_dir"
    raise FileNotFoundError(f"{flag}: no model at {path}")
  model = models.load(path)
  step = None
  info_path = os.path.splitext(path)[0] + ".json"
  if tf.io.gfile.exists(info_path):
    step = fileio.read_json(info_path).get("step")
  return model, path, step


DEFAULT_TARGET = dict(dataset="cifar10", norm="linf", eps=8 / 255)


def run_defaults(model_dir=None, model_path=None):
  """What the run was trained on (dataset, norm, eps, data_dir), from the model's .json written
  by rgd.train; {} when there is none."""
  path = model_path or (fileio.join(model_dir, "model.keras") if model_dir else None)
  if not path:
    return {}
  info_path = os.path.splitext(path)[0] + ".json"
  return fileio.read_json(info_path) if tf.io.gfile.exists(info_path) else {}


def resolve_target(run, dataset=None, norm=None, eps=None):
  """(dataset, norm, eps, data_dir, origin): the flags where given, else the run's own, else
  CIFAR-10 Linf 8/255. A standard (non-robust) run has no threat model of its own."""
  robust = run.get("objective", "trades") != "standard"
  own = dict(dataset=run.get("dataset"), norm=run.get("norm") if robust else None,
             eps=run.get("eps") if robust else None)
  given = dict(dataset=dataset, norm=norm, eps=eps)
  chosen, origin = {}, []
  for key in ("dataset", "norm", "eps"):
    for where, values in (("flag", given), ("the run", own), ("default", DEFAULT_TARGET)):
      if values[key] is not None:
        chosen[key] = values[key]
        origin.append(f"{key} from {where}")
        break
  chosen["eps"] = parse_eps(chosen["eps"]) if isinstance(chosen["eps"], str) else float(
      chosen["eps"])
  origin = ", ".join(origin)
  return chosen["dataset"], chosen["norm"], chosen["eps"], run.get("data_dir"), origin


def _versions():
  return dict(rgd=rgd.__version__, tensorflow=tf.__version__, keras=keras.__version__,
              numpy=np.__version__, python=platform.python_version())


def report_name(suite, norm, eps):
  return f"eval_{suite.replace('+', '_')}_{norm}_{eps:.6g}"


def evaluate_model(model, images, labels, suite="aa+mt", norm="linf", eps=8 / 255,
                   batch_size=500, seed=0, output_dir=None, settings=None, jit_compile=False,
                   strategy=None, source="model", stream=None):
  """Runs `suite` on uint8 or float [0, 1] `images` and writes the report files to
  `output_dir` (if given). Returns the report dict."""
  if norm not in NORMS:
    raise ValueError(f"--norm={norm!r}: expected one of {NORMS}")
  eps = parse_eps(eps)
  stages = cascade.get_suite(suite, norm, eps)
  if len(images) == 0:
    raise ValueError(f"{source}: the dataset is empty")
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  labels = np.asarray(labels).astype(np.int32)
  model_fn = lambda x: model(x, training=False)

  # Checks before spending time on attacks (AutoAttack's checks.py).
  probe = tf.constant(images[:min(len(images), batch_size)])
  probe_logits = tf.cast(model_fn(probe), tf.float32).numpy()
  checks.check_output_shape(probe_logits, len(probe), int(labels.max()) + 1, source)
  checks.check_finite(probe_logits, source)
  warnings = (checks.check_randomized(model_fn, probe) + checks.check_logits(probe_logits) +
              checks.check_num_classes(probe_logits.shape[1], stages))
  for w in warnings:  # now, not after hours of attacks
    logging.warning(w)
  state = None
  if output_dir:  # finished stages survive an interruption (rgd.eval_state)
    state = eval_state.StageState(
        os.path.join(output_dir, report_name(suite, norm, eps) + ".state.npz"),
        eval_state.fingerprint(images, labels, model=(settings or {}).get("model", source),
                               suite=suite, norm=norm, eps=eps, seed=seed,
                               batch_size=batch_size, jit_compile=jit_compile,
                               stages=[s.name for s in stages], gin=gin.config_str()))

  progress = {}

  def on_batch(s, name, done, total):
    # `total` bounds the stage's batches (every run on every point); restarts that attack
    # only the survivors end early, with a last call done == total.
    if done == 0:
      progress[s] = Progress(total, desc=f"stage {s + 1}/{len(stages)} {name}", unit="batch",
                             stream=stream)
    else:
      progress[s].update(done - progress[s].count)
    if done == total:
      progress[s].close()

  start = time.monotonic()
  result = cascade.run_cascade(stages, model_fn, images, labels, batch_size, seed, strategy,
                               jit_compile, on_batch, state)
  names = [s.name for s in stages]
  black_box = checks.check_black_box(names, result["robust_after"])
  for w in black_box:
    logging.warning(w)
  warnings += black_box
  n = len(images)
  report = dict(
      suite=suite, norm=norm, eps=eps, num_examples=n,
      clean_accuracy=float(result["clean_correct"].mean()),
      robust_accuracy=float(result["robust"].mean()),
      # seconds_per_attacked_point: the stage's time over the points it attacked; point_runs: the
      # points summed over its runs (restarts, targets), each run attacking only survivors.
      stages=[dict(name=name, robust_accuracy=float(r.mean()), seconds=sec, attacked=att,
                   seconds_per_attacked_point=sec / att if att else 0.0, point_runs=pr)
              for name, r, sec, att, pr in zip(names, result["robust_after"],
                                                result["stage_seconds"], result["attacked"],
                                                result["point_runs"])],
      seconds=time.monotonic() - start,
      settings=dict(settings or {}, seed=seed, batch_size=batch_size, jit_compile=jit_compile,
                    bucket_sizes=result["bucket_sizes"], gin=gin.config_str()),
      versions=_versions(), warnings=warnings,
      restored_stages=names[:result["restored_stages"]])
  if output_dir:
    write_report(output_dir, report, result, labels)
    state.remove()
  return report


def write_report(output_dir, report, result, labels):
  name = report_name(report["suite"], report["norm"], report["eps"])
  text = json.dumps(report, indent=2, sort_keys=True) + "\n"
  fileio.atomic_write_text(os.path.join(output_dir, name + ".json"), text)
  arrays = dict(label=labels, clean_correct=result["clean_correct"], robust=result["robust"],
                robust_after=np.stack(result["robust_after"]) if result["robust_after"] else
                np.zeros((0, len(labels)), bool),
                stage_names=np.array([s["name"] for s in report["stages"]], dtype=str),
                x_adv=result["x_adv"])
  fileio.save_npz(os.path.join(output_dir, name + ".npz"), **arrays)
  step = report["settings"].get("checkpoint_step") or 0
  writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
  with writer.as_default(step=step):
    prefix = f"eval/{report['suite']}/{report['norm']}_{report['eps']:.6g}"
    tf.summary.scalar(f"{prefix}/clean_accuracy", report["clean_accuracy"])
    tf.summary.scalar(f"{prefix}/robust_accuracy", report["robust_accuracy"])
    for stage in report["stages"]:
      tf.summary.scalar(f"{prefix}/after_{stage['name']}", stage["robust_accuracy"])
    tf.summary.text(f"{prefix}/report", "```\n" + text + "```")
  writer.close()


# ------------------------------------------------------------------------------------------
# Entry point.

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .keras model taking [0, 1] images, returning logits.")
flags.DEFINE_string("dataset", None, "tfds name (cifar10, cifar100, svhn_cropped) or npz:DIR "
                    "(rgd.data). Default: what --model_dir was trained on (model.json), else "
                    "cifar10.")
flags.DEFINE_string("split", "test", "Split to evaluate (test, validation, train, train_full).")
flags.DEFINE_string("suite", "aa+mt", f"One of {sorted(cascade.SUITES)}, or cifar10c (common "
                    "corruptions, rgd/corruptions/cifar10c.py).")
flags.DEFINE_string("norm", None, "linf or l2. Default: the run's (model.json), else linf.")
flags.DEFINE_string("eps", None, "Radius, a number or a fraction like 8/255. Default: the run's "
                    "(model.json), else 8/255.")
flags.DEFINE_integer("num_examples", None, "Evaluate the first N examples (default: all).")
flags.DEFINE_integer("batch_size", 500, "Examples per attack batch.")
flags.DEFINE_integer("seed", 0, "Seed of all random starts and searches.")
flags.DEFINE_string("output_dir", None, "Where the report goes (default: MODEL_DIR/eval or "
                    "the model file's folder/eval).")
flags.DEFINE_bool("jit", False, "Compile the attacks with XLA.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
  if FLAGS.suite == "cifar10c":
    return _main_cifar10c()
  run = run_defaults(FLAGS.model_dir, FLAGS.model)
  dataset, norm, eps, data_dir, origin = resolve_target(run, FLAGS.dataset, FLAGS.norm,
                                                        FLAGS.eps)
  if FLAGS.suite not in cascade.SUITES:
    raise app.UsageError(f"--suite={FLAGS.suite!r}: expected one of {sorted(cascade.SUITES)}")
  if FLAGS.num_examples is not None and FLAGS.num_examples <= 0:
    raise app.UsageError(f"--num_examples={FLAGS.num_examples} must be positive")
  model, path, step = load_model(FLAGS.model_dir, FLAGS.model)
  logging.info("Evaluating %s on %s/%s, %s eps %.6g (%s).", path, dataset, FLAGS.split, norm,
               eps, origin)
  images, labels = data.load_split(dataset, FLAGS.split, data_dir=data_dir)
  if FLAGS.num_examples:
    images, labels = images[:FLAGS.num_examples], labels[:FLAGS.num_examples]
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path),
                                                "eval")
  from rgd import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  strategy = strategy_lib.get_strategy()
  batch_size = FLAGS.batch_size
  if strategy.num_replicas_in_sync > 1:
    batch_size += (-batch_size) % strategy.num_replicas_in_sync
  else:
    strategy = None
  settings = dict(model=path if fileio.is_remote(path) else os.path.abspath(path),
                  checkpoint_step=step, dataset=dataset,
                  split=FLAGS.split, command=" ".join(sys.argv))
  try:
    report = evaluate_model(model, images, labels, FLAGS.suite, norm, eps, batch_size,
                            FLAGS.seed, output_dir, settings, FLAGS.jit, strategy, source=path)
  except (checks.NonFiniteLogitsError, eval_state.StateMismatchError) as e:
    print(f"rgd.evaluate: {e}", file=sys.stderr)
    sys.exit(2)
  stages = ", ".join(f"{s['name']} {100 * s['robust_accuracy']:.2f}%" for s in report["stages"])
  print(f"clean {100 * report['clean_accuracy']:.2f}% | {stages} | robust "
        f"{100 * report['robust_accuracy']:.2f}% ({report['num_examples']} examples, "
        f"{report['seconds']:.0f} s) -> {output_dir}")


def _main_cifar10c():
  """CIFAR-10-C errors and mCE (seed 003); the report sits next to the attack suites'."""
  from rgd.corruptions import cifar10c  # pylint: disable=g-import-not-at-top
  model, path, step = load_model(FLAGS.model_dir, FLAGS.model)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path),
                                                "eval")
  # CIFAR-10-C corrupts CIFAR-10's test set: its clean reference is CIFAR-10's.
  dataset = FLAGS.dataset or "cifar10"
  clean = data.load_split(dataset, FLAGS.split)
  if FLAGS.num_examples:
    clean = (clean[0][:FLAGS.num_examples], clean[1][:FLAGS.num_examples])
  settings = dict(model=path if fileio.is_remote(path) else os.path.abspath(path),
                  checkpoint_step=step, dataset=dataset,
                  command=" ".join(sys.argv), gin=gin.config_str())
  report = cifar10c.evaluate_cifar10c(model, output_dir, FLAGS.batch_size, FLAGS.num_examples,
                                      clean=clean, settings=settings, versions=_versions(),
                                      log=logging.info)
  print(f"{report['table']}\nclean {100 * report['clean_accuracy']:.2f}% | mCE "
        f"{100 * report['mce']:.2f}% ({report['num_examples']} examples per corruption, "
        f"{report['seconds']:.0f} s) -> {output_dir}")


if __name__ == "__main__":
  app.run(main)
