"""Certified accuracy of a certifiable model (rgd.certified) and its report: the library half of
rgd.certify. Certificates come from rgd.certified.certificate (exact Lipschitz bounds, float32);
the report adds the certified accuracy at several radii, the distribution of certified radii
(seed 004 Fig. 5) and the train/test generalisation gap (seed 004 Sec. 4.3)."""
import io
import os
import time

import gin
import numpy as np

from rgd.certified import certificate
from rgd.evaluation import per_class, reports
from rgd.evaluation.target import versions
from rgd.runtime import fileio

DEFAULT_RADII = {"l2": (0.0, 36 / 255, 72 / 255, 108 / 255),
                 "linf": (0.0, 2 / 255, 8 / 255, 16 / 255)}


def generalization_gap(train_correct, test_correct):
  """Seed 004 Sec. 4.3: train clean accuracy minus test clean accuracy."""
  return float(np.mean(train_correct)) - float(np.mean(test_correct))


def radius_distribution(radius, correct, num_bins=20, max_radius=None):
  """Rows (r, fraction of all examples that are correct with radius >= r, same for wrong)."""
  finite = radius[np.isfinite(radius)]
  top = max_radius or (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
  grid = np.linspace(0.0, top, num_bins + 1)
  n = max(len(radius), 1)
  return [dict(radius=float(r), correct=float(np.sum(correct & (radius > r))) / n,
               wrong=float(np.sum(~correct & (radius > r))) / n) for r in grid]


def plot_distribution(rows, eps, norm, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  r = [row["radius"] for row in rows]
  ax.plot(r, [row["correct"] for row in rows], label="correct")
  ax.plot(r, [row["wrong"] for row in rows], label="misclassified")
  ax.axvline(eps, color="gray", linestyle=":", label=f"eps = {eps:.4g}")
  ax.set_xlabel(f"certified {norm} radius r")
  ax.set_ylabel("fraction of test set with radius > r")
  ax.legend()
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  fileio.atomic_write_bytes(path, buf.getvalue())


def markdown_tables(report):
  lines = [f"# Certification of {report['settings'].get('model', 'model')}", "",
           f"clean accuracy {100 * report['clean_accuracy']:.2f}%, certified accuracy at "
           f"{report['norm']} eps {report['eps']:.6g}: {100 * report['certified_accuracy']:.2f}%",
           "", f"precision: {report.get('precision')}; l_inf bound: "
           f"{report['lipschitz'].get('linf_bound')}",
           "", "| radius | certified accuracy |", "|---|---|"]
  lines += [f"| {r['radius']:.6g} | {100 * r['certified_accuracy']:.2f}% |"
            for r in report["certified_at"]]
  lines += ["", "Radius distribution (fraction of the test set with certified radius > r):", "",
            "| r | correct | misclassified |", "|---|---|---|"]
  lines += [f"| {r['radius']:.4g} | {r['correct']:.4f} | {r['wrong']:.4f} |"
            for r in report["radius_distribution"]]
  gap = report.get("generalization_gap")
  if gap is not None:
    lines += ["", f"train clean accuracy {100 * report['train_clean_accuracy']:.2f}% "
              f"({report['num_train_examples']} images), generalization gap "
              f"{100 * gap:.2f} points (seed 004 Sec. 4.3)"]
  lines += ["", f"Per class (certified at eps {report['eps']:.6g}):", "",
            per_class.markdown(report["per_class"], ("clean_accuracy", "certified_accuracy"))]
  return "\n".join(lines) + "\n"


def certify_model(model, images, labels, eps, radii=None, train_images=None, train_labels=None,
                  batch_size=256, output_dir=None, settings=None, linf_bound="interval",
                  class_names=None):
  """Certifies `model` on (images, labels); returns the report dict and writes its files. The
  report records the precision settings the certificate was computed under; its `per_class`
  rows name the classes by `class_names` (label order) where given."""
  start = time.monotonic()
  norm = certificate.certifiable_norm(model)   # from the layers: no bound computed twice
  radii = sorted(set([float(r) for r in (radii if radii is not None else DEFAULT_RADII[norm])]
                     + [float(eps)]))
  result = certificate.certify(model, images, labels, batch_size, radii=radii,
                               linf_bound=linf_bound)
  info = result["info"]
  report = dict(
      norm=norm, eps=float(eps), num_examples=int(len(labels)),
      clean_accuracy=float(result["correct"].mean()),
      certified_accuracy=certificate.certified_accuracy(result, eps),
      certified_at=[dict(radius=r, certified_accuracy=certificate.certified_accuracy(result, r))
                    for r in radii],
      radius_distribution=radius_distribution(result["radius"], result["correct"]),
      median_radius_correct=float(np.median(result["radius"][result["correct"]]))
      if result["correct"].any() else None,
      lipschitz={k: v for k, v in info.items() if k not in ("head_kernel",)},
      rounding_relative=certificate.ROUNDING_RELATIVE["float32"],
      precision=result["precision"],
      settings=dict(settings or {}, batch_size=batch_size, gin=gin.config_str()),
      versions=versions(),
      per_class=per_class.rows(labels, dict(
          clean_accuracy=result["correct"],
          certified_accuracy=result["correct"] & result["certified_at"][float(eps)]),
          class_names))
  if train_images is not None:
    train = certificate.certify(model, train_images, train_labels, batch_size, refresh=False,
                                linf_bound="margin")   # clean accuracy only
    report.update(train_clean_accuracy=float(train["correct"].mean()),
                  num_train_examples=int(len(train_labels)),
                  generalization_gap=generalization_gap(train["correct"], result["correct"]))
  report["seconds"] = time.monotonic() - start
  if output_dir:
    write_report(output_dir, report, result)
  return report


def report_name(norm, eps):
  return f"certify_{norm}_{eps:.6g}"


def write_report(output_dir, report, result):
  name = os.path.join(output_dir, report_name(report["norm"], report["eps"]))
  fileio.atomic_write_json(name + ".json", report)
  fileio.atomic_write_text(name + ".md", markdown_tables(report))
  plot_distribution(report["radius_distribution"], report["eps"], report["norm"], name + ".png")
  buf = io.BytesIO()
  np.savez(buf, radius=result["radius"], predictions=result["predictions"],
           correct=result["correct"])
  fileio.atomic_write_bytes(name + ".npz", buf.getvalue())
  prefix = f"certify/{report['norm']}_{report['eps']:.6g}"
  reports.write_tensorboard(
      output_dir, report["settings"].get("checkpoint_step"),
      {f"{prefix}/{k}": report[k] for k in ("clean_accuracy", "certified_accuracy",
                                             "generalization_gap") if k in report})
