"""Clean accuracy on CIFAR-10.1 beside CIFAR-10: the distribution-shift column of seed 003
Table 2 (Recht et al. 2018's 2,000 new test images; models trained on CIFAR-10's training set
only).

    report = evaluate_cifar10_1(model, cifar10=(x, y), cifar10_1=(x1, y1), output_dir=...)
    print(report["table"])

writes `eval_cifar10_1.json` (both accuracies, the gap, the table, settings, versions),
`eval_cifar10_1.npz` (per-example correctness on each set) and TensorBoard scalars / text,
through tf.io.gfile, next to the other suites' reports.
"""
import io
import os
import time

import numpy as np
import tensorflow as tf

from rgd.evaluation import cifar10c, per_class, reports
from rgd.runtime import fileio

REPORT_NAME = "eval_cifar10_1"

# Seed 003 Table 2: (clean CIFAR-10, CIFAR-10.1) top-1 accuracy (%), pre-activation ResNet-50.
TABLE2 = {
    "AdA + DeepAugment (10x) + AugMix": (94.93, 87.35),
    "AdA + DeepAugment + AugMix": (94.72, 88.20),
    "AdA + AugMix": (96.26, 91.05),
    "AdA": (96.18, 90.50),
    "DeepAugment": (94.27, 87.10),
    "DeepAugment + AugMix": (94.25, 87.60),
    "DeepAugment (10x)": (95.57, 88.75),
    "DeepAugment (10x) + AugMix": (95.21, 89.35),
    "AugMix": (96.05, 90.40),
    "Nominal": (95.77, 89.65),
}


def format_table(report):
  """Seed 003 Table 2's first two columns (percent), this model first, then the paper's rows."""
  lines = [f"{'SETUP':<34}{'CLEAN':>9}{'CIFAR-10.1':>12}",
           f"{report.get('setup', 'this model'):<34}{100 * report['cifar10_accuracy']:8.2f}%"
           f"{100 * report['cifar10_1_accuracy']:11.2f}%"]
  for setup, (clean, shifted) in TABLE2.items():
    lines.append(f"{setup:<34}{clean:8.2f}%{shifted:11.2f}%")
  return "\n".join(lines)


def evaluate_cifar10_1(model, cifar10, cifar10_1, output_dir=None, batch_size=500,
                       settings=None, versions=None, class_names=None):
  """Top-1 accuracy of `model` (taking [0, 1] images) on CIFAR-10's test set and on CIFAR-10.1,
  each given as (uint8 images, int labels); writes the report when `output_dir` is set. Its
  `per_class` has each class's accuracy on both (named by `class_names`)."""
  start = time.monotonic()
  predict = cifar10c.make_predict(model)
  correct = {name: cifar10c.accuracy_flags(predict, images, labels, batch_size)
             for name, (images, labels) in (("cifar10", cifar10), ("cifar10_1", cifar10_1))}
  report = dict(
      suite="cifar10_1",
      cifar10_accuracy=float(correct["cifar10"].mean()),
      cifar10_1_accuracy=float(correct["cifar10_1"].mean()),
      num_examples={k: int(len(v)) for k, v in correct.items()},
      seconds=time.monotonic() - start, settings=dict(settings or {}, batch_size=batch_size),
      versions=versions or {},
      per_class=_per_class(cifar10[1], cifar10_1[1], correct, class_names))
  report["gap"] = report["cifar10_accuracy"] - report["cifar10_1_accuracy"]
  report["table"] = format_table(report)
  if output_dir:
    write_report(output_dir, report, correct)
  return report


def _per_class(labels, shifted_labels, correct, class_names):
  """One row per class present in both sets: its CIFAR-10 row (label, name, examples,
  cifar10_accuracy) with the CIFAR-10.1 accuracy and examples added."""
  rows = per_class.rows(labels, dict(cifar10_accuracy=correct["cifar10"]), class_names)
  shifted = {r["label"]: r for r in per_class.rows(
      shifted_labels, dict(cifar10_1_accuracy=correct["cifar10_1"]), class_names)}
  return [dict(r, cifar10_1_accuracy=shifted[r["label"]]["cifar10_1_accuracy"],
               cifar10_1_examples=shifted[r["label"]]["examples"])
          for r in rows if r["label"] in shifted]


def write_report(output_dir, report, correct):
  tf.io.gfile.makedirs(output_dir)
  base = os.path.join(output_dir, REPORT_NAME)
  fileio.atomic_write_json(base + ".json", report)
  buf = io.BytesIO()
  np.savez(buf, **{f"correct_{k}": v for k, v in correct.items()})
  fileio.atomic_write_bytes(base + ".npz", buf.getvalue())
  reports.write_tensorboard(
      output_dir, report["settings"].get("checkpoint_step"),
      {"eval/cifar10_1/cifar10_accuracy": report["cifar10_accuracy"],
       "eval/cifar10_1/cifar10_1_accuracy": report["cifar10_1_accuracy"],
       "eval/cifar10_1/gap": report["gap"]},
      {"eval/cifar10_1/table": "```\n" + report["table"] + "\n```",
       "eval/cifar10_1/per_class": per_class.markdown(
           report["per_class"], ("cifar10_accuracy", "cifar10_1_accuracy"))})
