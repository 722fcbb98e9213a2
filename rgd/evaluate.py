r"""Robust accuracy of a trained model: `python -m rgd.evaluate --model_dir=DIR`.

    python -m rgd.evaluate --model_dir=runs/wrn28 --suite=aa+mt --norm=linf --eps=8/255 \
        --num_examples=10000
    python -m rgd.evaluate --model=any_model.keras --dataset=npz:DIR --suite=autoattack

`--model_dir` loads DIR/model.keras (the exported weight-averaged model) and the checkpoint step
from DIR/model.json; `--model` loads any Keras model that takes [0, 1] images and returns
logits. Suites (rgd.evaluation.cascade): `aa+mt` (seeds 000/001), `autoattack` (AutoAttack
standard), `pgd40`; their parameters can be changed with gin, e.g.
`--gin_bindings="aa_mt_suite.mt_restarts=20"`.

Writes to --output_dir (default DIR/eval): `<name>.json` (clean and robust accuracy, accuracy
after each stage, time per stage, settings, versions, warnings), `<name>.npz` (per-example
flags and the adversarial examples) and TensorBoard scalars; <name> is
`eval_<suite>_<norm>_<eps>`. `--suite=autoattack` also writes `<name>.robustbench.json`, the
fields of a RobustBench result file (clean_acc, autoattack_acc, eps, threat model,
architecture, number of examples). `--suite=cifar10c --cifar10c_dir=DIR` reads Hendrycks'
CIFAR-10-C folder instead of tfds. `--suite=cifar10_1` reports clean accuracy on CIFAR-10.1
(tfds `cifar10_1`, or the release's .npy pair with `--cifar10_1_dir=DIR`) beside the run's own
test split (seed 003 Table 2). Both take their clean split from the run (model.json's dataset)
unless --dataset is given. Deterministic for a given --seed.
"""
import os
import sys

from absl import flags, logging
import gin

from rgd import cli, evaluation
from rgd.data import cifar10_1 as cifar10_1_data, datasets
from rgd.evaluation import adversarial, cifar10c, per_class
from rgd.evaluation.cifar10_1 import evaluate_cifar10_1
from rgd.errors import ConfigError
from rgd.evaluation.target import load_model, resolve_target, run_defaults, versions
from rgd.runtime import fileio, strategy as strategy_lib

FLAGS = flags.FLAGS
cli.define_model_flags()  # --model, --dataset, --split, --eps, --num_examples, --batch_size, ...
flags.DEFINE_enum("suite", "aa+mt", sorted(evaluation.SUITES), "Attack suite (cifar10c: common "
                  "corruptions, rgd/evaluation/cifar10c.py).")
cli.define_norm_flag()  # --norm
flags.DEFINE_string("cifar10c_dir", None, "--suite=cifar10c from Hendrycks' CIFAR-10-C folder "
                    "(DIR/<corruption>.npy, DIR/labels.npy; a bucket works) instead of tfds' "
                    "cifar10_corrupted.")
flags.DEFINE_string("cifar10_1_dir", None, "--suite=cifar10_1 from the CIFAR-10.1 release's "
                    "folder (cifar10.1_v6_data.npy, cifar10.1_v6_labels.npy; a bucket works) "
                    "instead of tfds' cifar10_1.")
flags.DEFINE_integer("seed", 0, "Seed of all random starts and searches.")
flags.DEFINE_bool("jit", False, "Compile the attacks with XLA.")


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {argv[1:]}")
  cli.parse_gin_or_exit(require_model_dir=False)
  if evaluation.SUITES[FLAGS.suite] == "corruptions":
    return _main_cifar10c()
  if evaluation.SUITES[FLAGS.suite] == "distribution_shift":
    return _main_cifar10_1()
  run = run_defaults(FLAGS.model_dir, FLAGS.model)
  dataset, norm, eps, data_dir, origin = resolve_target(run, FLAGS.dataset, FLAGS.norm,
                                                        FLAGS.eps)
  model, path, step = load_model(FLAGS.model_dir, FLAGS.model)
  logging.info("Evaluating %s on %s/%s, %s eps %.6g (%s).", path, dataset, FLAGS.split, norm,
               eps, origin)
  images, labels = datasets.load_split(dataset, FLAGS.split, data_dir=data_dir)
  if FLAGS.num_examples:
    images, labels = images[:FLAGS.num_examples], labels[:FLAGS.num_examples]
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path),
                                                "eval")
  strategy = strategy_lib.get_strategy()
  batch_size = FLAGS.batch_size
  if strategy.num_replicas_in_sync > 1:
    batch_size += (-batch_size) % strategy.num_replicas_in_sync
  else:
    strategy = None
  settings = dict(model=path if fileio.is_remote(path) else os.path.abspath(path),
                  checkpoint_step=step, dataset=dataset,
                  split=FLAGS.split, command=" ".join(sys.argv))
  names = per_class.class_names(run, dataset, model.output_shape[-1], data_dir)
  report = adversarial.evaluate_model(model, images, labels, FLAGS.suite, norm, eps, batch_size,
                                      FLAGS.seed, output_dir, settings, FLAGS.jit, strategy,
                                      source=path, class_names=names)
  if FLAGS.suite == "autoattack":  # RobustBench's numbers are AutoAttack's
    architecture = adversarial.architecture_name(run.get("architecture") or model.name)
    adversarial.write_robustbench_entry(output_dir, report, architecture, dataset)
  stages = ", ".join(f"{s['name']} {100 * s['robust_accuracy']:.2f}%" for s in report["stages"])
  print(f"clean {100 * report['clean_accuracy']:.2f}% | {stages} | robust "
        f"{100 * report['robust_accuracy']:.2f}% ({report['num_examples']} examples, "
        f"{report['seconds']:.0f} s) -> {output_dir}\n"
        f"weakest classes (robust): {per_class.weakest(report['per_class'], 'robust_accuracy')}")


def _main_cifar10c():
  """CIFAR-10-C errors and mCE (seed 003); the report sits next to the attack suites'."""
  model, path, step = load_model(FLAGS.model_dir, FLAGS.model)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path),
                                                "eval")
  settings = dict(model=path if fileio.is_remote(path) else os.path.abspath(path),
                  checkpoint_step=step, command=" ".join(sys.argv), gin=gin.config_str())
  loader = None
  if FLAGS.cifar10c_dir:
    settings["cifar10c_dir"] = FLAGS.cifar10c_dir
    loader = cifar10c.FolderLoader(FLAGS.cifar10c_dir)
  clean, settings["dataset"], _, _ = _clean_split()
  report = cifar10c.evaluate_cifar10c(model, output_dir, FLAGS.batch_size, FLAGS.num_examples,
                                      clean=clean, settings=settings, versions=versions(),
                                      log=logging.info, loader=loader)
  print(f"{report['table']}\nclean {100 * report['clean_accuracy']:.2f}% | mCE "
        f"{100 * report['mce']:.2f}% ({report['num_examples']} examples per corruption, "
        f"{report['seconds']:.0f} s) -> {output_dir}")


def _clean_split():
  """((images, labels), dataset, data_dir, run) of the clean reference: --split of --dataset,
  else of the run's own data set (model.json, as the attack suites read it; `run` is what it
  holds), else of CIFAR-10."""
  run = run_defaults(FLAGS.model_dir, FLAGS.model)
  dataset, _, _, data_dir, _ = resolve_target(run, FLAGS.dataset)
  images, labels = datasets.load_split(dataset, FLAGS.split, data_dir=data_dir)
  if FLAGS.num_examples:
    images, labels = images[:FLAGS.num_examples], labels[:FLAGS.num_examples]
  return (images, labels), dataset, data_dir, run


def _main_cifar10_1():
  """Clean accuracy on CIFAR-10.1 beside the run's test split (seed 003 Table 2)."""
  model, path, step = load_model(FLAGS.model_dir, FLAGS.model)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path),
                                                "eval")
  settings = dict(model=path if fileio.is_remote(path) else os.path.abspath(path),
                  checkpoint_step=step, split=FLAGS.split, command=" ".join(sys.argv),
                  cifar10_1=FLAGS.cifar10_1_dir or f"tfds:cifar10_1/{cifar10_1_data.VERSION}")
  if model.output_shape[-1] != 10:
    raise ConfigError(f"{path}: {model.output_shape[-1]} outputs; CIFAR-10.1 has CIFAR-10's "
                      "10 classes")
  clean, settings["dataset"], data_dir, run = _clean_split()
  shifted = datasets.load_split(
      f"cifar10_1:{FLAGS.cifar10_1_dir}" if FLAGS.cifar10_1_dir else "cifar10_1", "test",
      data_dir=data_dir)
  if FLAGS.num_examples:
    shifted = (shifted[0][:FLAGS.num_examples], shifted[1][:FLAGS.num_examples])
  report = evaluate_cifar10_1(model, clean, shifted, output_dir, FLAGS.batch_size, settings,
                              versions(), per_class.class_names(run, settings["dataset"], 10,
                                                                data_dir))
  print(f"{report['table']}\n{settings['dataset']} {100 * report['cifar10_accuracy']:.2f}% | "
        f"CIFAR-10.1 {100 * report['cifar10_1_accuracy']:.2f}% ({report['num_examples']}, "
        f"{report['seconds']:.0f} s) -> {output_dir}\nweakest classes (CIFAR-10.1): "
        f"{per_class.weakest(report['per_class'], 'cifar10_1_accuracy')}")


if __name__ == "__main__":
  cli.run(main, "rgd.evaluate")
