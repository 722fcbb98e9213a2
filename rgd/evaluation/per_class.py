"""Accuracy per class, named: the part of every report that says which classes a model fails on.

A robust model's errors are not spread evenly (CIFAR-10's cats and birds lose far more robust
accuracy than its cars and trucks), and an average over 100 CIFAR-100 or 200 TinyImageNet
classes hides that. Each report (rgd.evaluation.adversarial, certified, cifar10_1) adds

    rows = per_class.rows(labels, {"clean_accuracy": correct, "robust_accuracy": robust}, names)

to its JSON (`per_class`), a table to its text output and the weakest classes to the line it
prints. Names come from the run's model.json (`class_names`, written by rgd.train from the data
set's registry entry) or, for a bare --model, from the data set evaluated on; classes without a
name are shown by their label.
"""
import numpy as np

from rgd.data import registry
from rgd.errors import DataError


def class_names(run, dataset, num_outputs, data_dir=None):
  """The names of the model's classes in label order, or None: the run's own (model.json), else
  the evaluated data set's from the registry when it has as many classes as the model outputs.
  A data set whose names cannot be read (a folder without its wnid file) gives None rather
  than an error: names only label the report."""
  names = run.get("class_names")
  if not names and dataset:
    try:
      names = registry.class_names_of(dataset, data_dir)
    except (DataError, OSError):  # a label is not worth failing a report over
      names = None
  if names and len(names) == num_outputs:
    return [str(n) for n in names]
  return None


def rows(labels, flags, names=None):
  """One row per class present in `labels`: label, name, examples and, for each {metric: bool
  [N]} of `flags`, the fraction of that class's examples where the flag holds."""
  labels = np.asarray(labels).astype(np.int64)
  flags = {k: np.asarray(v, bool) for k, v in flags.items()}
  out = []
  for label in np.unique(labels):
    mask = labels == label
    row = dict(label=int(label), name=_name(names, label), examples=int(mask.sum()))
    row.update({k: float(v[mask].mean()) for k, v in flags.items()})
    out.append(row)
  return out


def _name(names, label):
  return names[label] if names is not None and 0 <= label < len(names) else str(int(label))


def weakest(table, metric, k=3):
  """'cat 12.0%, bird 25.0%, dog 30.0%': the k classes lowest on `metric` (ties by label)."""
  low = sorted(table, key=lambda r: (r[metric], r["label"]))[:k]
  return ", ".join(f"{r['name']} {100 * r[metric]:.1f}%" for r in low)


def markdown(table, metrics):
  """The rows as a markdown table, accuracies in percent."""
  head = "| class | name | examples | " + " | ".join(m.replace("_", " ") for m in metrics) + " |"
  lines = [head, "|" + "---|" * (3 + len(metrics))]
  for r in table:
    lines.append(f"| {r['label']} | {r['name']} | {r['examples']} | "
                 + " | ".join(f"{100 * r[m]:.2f}%" for m in metrics) + " |")
  return "\n".join(lines)
