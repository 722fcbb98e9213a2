"""CIFAR-10-C (Hendrycks & Dietterich 2019) as seed 003 Table 1 reports it.

15 corruptions x 5 severities of the CIFAR-10 test set, from tfds `cifar10_corrupted` (configs
`{corruption}_{severity}`; tfds calls glass blur `frosted_glass_blur` and elastic transform
`elastic`). Seed 003 (Sec. 3 "Competing methods and evaluation") reports *absolute* errors: the
top-1 error of each corruption averaged over its five severities (Table 1's columns), and the
mCE, the mean of those over the 15 corruptions (no AlexNet normalisation as on ImageNet-C).

    report = evaluate_cifar10c(model, output_dir="runs/x/eval")
    print(format_table(report))

writes `eval_cifar10c.json` (errors per corruption and severity, mCE, clean accuracy, table,
settings, versions), `eval_cifar10c.npz` (per-example correctness [15, 5, N]), a heat map
`eval_cifar10c.png` and TensorBoard scalars / text / image, all through tf.io.gfile.

The same sets from the folder users download from Hendrycks' release (the layout RobustBench's
`load_cifar10c` reads): `DIR/<corruption>.npy`, uint8 [5 * N, 32, 32, 3] holding severities
1..5 in order (N = 10,000), and `DIR/labels.npy` [5 * N]; read through gfile (a bucket works)
with allow_pickle=False:

    report = evaluate_cifar10c(model, loader=FolderLoader("/data/CIFAR-10-C"))
"""
import io
import os
import time

import numpy as np
import tensorflow as tf

from rgd.data import sources
from rgd.errors import ConfigError, DataError
from rgd.evaluation import reports
from rgd.runtime import fileio

# Table 1's column order, with the tfds config names.
CORRUPTIONS = (
    ("gaussian_noise", "Gauss"), ("shot_noise", "Shot"), ("impulse_noise", "Impulse"),
    ("defocus_blur", "Defocus"), ("frosted_glass_blur", "Glass"), ("motion_blur", "Motion"),
    ("zoom_blur", "Zoom"), ("snow", "Snow"), ("frost", "Frost"), ("fog", "Fog"),
    ("brightness", "Bright"), ("contrast", "Contrast"), ("elastic", "Elastic"),
    ("pixelate", "Pixel"), ("jpeg_compression", "JPEG"))
SEVERITIES = (1, 2, 3, 4, 5)
GROUPS = (("Noise", 3), ("Blur", 4), ("Weather", 4), ("Digital", 4))  # Table 1's header
REPORT_NAME = "eval_cifar10c"

# Seed 003 Table 1 rows the gin files aim at: mCE and the 15 corruption errors (%).
TABLE1 = {
    "AdA + DeepAugment (10x) + AugMix": (7.83, (8.8, 7.8, 11.2, 5.9, 10.7, 7.3, 6.5, 8.5, 6.7,
                                               8.7, 5.2, 6.2, 8.5, 7.7, 7.8)),
    "AdA + AugMix": (8.80, (16.4, 12.8, 14.4, 5.7, 10.9, 7.5, 6.3, 7.7, 6.7, 6.6, 3.9, 4.7, 8.1,
                            11.9, 8.4)),
    "AugMix": (13.13, (26.2, 18.3, 10.6, 7.2, 32.8, 10.4, 9.0, 10.5, 10.1, 6.3, 4.7, 6.3, 11.4,
                       20.1, 13.0)),
    "DeepAugment (10x) + AugMix": (8.11, (8.8, 7.7, 8.6, 5.7, 14.4, 7.9, 6.2, 8.4, 6.7, 7.3,
                                          5.1, 6.5, 9.2, 10.4, 8.9)),
    "Nominal": (25.17, (58.3, 44.6, 49.1, 15.4, 44.7, 19.7, 19.4, 15.6, 17.9, 10.0, 5.5, 17.2,
                        15.3, 24.7, 19.8)),
    "AdA (EDSR)": (12.49, (25.8, 19.8, 29.9, 9.3, 15.6, 10.9, 9.6, 9.3, 8.1, 8.8, 4.3, 11.0, 9.3,
                           6.7, 9.2)),
}


def mean_corruption_error(errors):
  """errors [C, S] (fractions) -> (per-corruption error [C] averaged over severities, mCE)."""
  errors = np.asarray(errors, np.float64)
  per_corruption = errors.mean(axis=1)
  return per_corruption, float(per_corruption.mean())


def load_corruption(corruption, severity, data_dir=None, num_examples=None):
  """(images uint8, labels) of one CIFAR-10-C config; a clear error when tfds cannot get it."""
  name = f"cifar10_corrupted/{corruption}_{severity}"
  images, labels = sources.load_tfds(name, "test", data_dir)
  if num_examples:
    images, labels = images[:num_examples], labels[:num_examples]
  return images, labels


# Hendrycks' file names where tfds' config names differ.
FOLDER_NAMES = {"frosted_glass_blur": "glass_blur", "elastic": "elastic_transform"}


class FolderLoader:
  """(images, labels) of one corruption and severity from Hendrycks' CIFAR-10-C folder; each
  corruption file is read once for its five severities. Missing files, wrong shapes or dtypes and
  a label file that does not match are DataErrors naming the file."""

  def __init__(self, directory):
    self.directory = directory
    self._labels = None
    self._cached = (None, None)

  def _read(self, name):
    path = fileio.join(self.directory, f"{name}.npy")
    if not tf.io.gfile.exists(path):
      raise DataError(f"{path}: missing (CIFAR-10-C folder {self.directory} needs "
                      f"<corruption>.npy for each corruption and labels.npy)")
    try:
      return path, np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False)
    except ValueError as e:
      raise DataError(f"{path}: not a plain .npy array ({e})") from e

  def labels(self):
    if self._labels is None:
      path, labels = self._read("labels")
      if labels.ndim != 1 or len(labels) % len(SEVERITIES) or not len(labels):
        raise DataError(f"{path}: shape {labels.shape}; expected [5 * N] labels (severities 1..5"
                        " in order)")
      if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{path}: dtype {labels.dtype}, min {labels.min()}; expected class "
                        "indices")
      self._labels = labels.astype(np.int64)
    return self._labels

  def _images(self, corruption):
    if self._cached[0] != corruption:
      path, images = self._read(FOLDER_NAMES.get(corruption, corruption))
      labels = self.labels()
      if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: {images.dtype} {images.shape}; expected uint8 [5 * N, H, W, 3]")
      if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but labels.npy has {len(labels)} labels")
      self._cached = (corruption, images)
    return self._cached[1]

  def __call__(self, corruption, severity, num_examples=None):
    images, labels = self._images(corruption), self.labels()
    n = len(labels) // len(SEVERITIES)
    part = slice((severity - 1) * n, (severity - 1) * n + min(n, num_examples or n))
    return images[part], labels[part]


def make_predict(model):
  """One compiled prediction function for all 75 sets (a new tf.function per set retraces)."""
  return tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1,
                                         output_type=tf.int32))


def accuracy_flags(predict, images, labels, batch_size):
  correct = []
  for i in range(0, len(images), batch_size):
    x = tf.constant(images[i:i + batch_size].astype(np.float32) / 255.)
    correct.append(predict(x).numpy() == labels[i:i + batch_size])
  return np.concatenate(correct)


def format_table(report):
  """The errors laid out as seed 003 Table 1 (percent)."""
  names = [short for _, short in CORRUPTIONS if _ in report["corruptions"]]
  groups = "".join(f"{g:<{9 * n}}" for g, n in GROUPS) if len(names) == 15 else ""
  lines = [f"{'':<22}{'':>8} {groups}".rstrip(),
           f"{'SETUP':<22}{'mCE':>8} " + "".join(f"{n:>9}" for n in names)]
  row = report["corruption_errors"]
  lines.append(f"{report.get('setup', 'this model'):<22}{100 * report['mce']:7.2f}% " +
               "".join(f"{100 * row[c]:9.1f}" for c in report["corruptions"]))
  for setup, (mce, errs) in TABLE1.items():
    if len(names) == 15:
      lines.append(f"{setup[:22]:<22}{mce:7.2f}% " + "".join(f"{e:9.1f}" for e in errs))
  return "\n".join(lines)


def heatmap_png(errors, corruptions):
  """PNG bytes of the error heat map (corruptions x severities), matplotlib's Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  errors = 100 * np.asarray(errors)
  fig, ax = plt.subplots(figsize=(4.5, 0.35 * len(corruptions) + 1.2))
  im = ax.imshow(errors, cmap="viridis_r", aspect="auto", vmin=0)
  ax.set_xticks(range(errors.shape[1]), [str(s) for s in SEVERITIES[:errors.shape[1]]])
  ax.set_yticks(range(len(corruptions)), corruptions)
  ax.set_xlabel("severity")
  for (i, j), v in np.ndenumerate(errors):
    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
  fig.colorbar(im, ax=ax, label="top-1 error (%)")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  return buf.getvalue()


def evaluate_cifar10c(model, output_dir=None, batch_size=500, num_examples=None, data_dir=None,
                      corruptions=None, clean=None, settings=None, versions=None, log=print,
                      loader=None):
  """Errors on every corruption and severity; writes the report when `output_dir` is set.
  `clean` = (images, labels) adds the clean accuracy. `loader(corruption, severity,
  num_examples)` gives each set (FolderLoader: Hendrycks' folder); default tfds."""
  names = [c for c, _ in CORRUPTIONS] if corruptions is None else list(corruptions)
  unknown = sorted(set(names) - {c for c, _ in CORRUPTIONS})
  if unknown:
    raise ConfigError(f"Unknown CIFAR-10-C corruption(s) {unknown}; expected tfds names "
                      f"{[c for c, _ in CORRUPTIONS]}")
  start = time.monotonic()
  predict = make_predict(model)
  flags, labels_out = [], None
  for c in names:
    row = []
    for s in SEVERITIES:
      images, labels = (loader(c, s, num_examples) if loader else
                        load_corruption(c, s, data_dir, num_examples))
      row.append(accuracy_flags(predict, images, labels, batch_size))
      labels_out = labels
      log(f"cifar10c {c}_{s}: accuracy {100 * row[-1].mean():.2f}%")
    flags.append(np.stack(row))
  correct = np.stack(flags)  # [C, S, N]
  errors = 1.0 - correct.mean(axis=2)
  per_corruption, mce = mean_corruption_error(errors)
  report = dict(
      suite="cifar10c", num_examples=int(correct.shape[2]), mce=mce,
      corruptions=names,
      corruption_errors={c: float(e) for c, e in zip(names, per_corruption)},
      errors={c: [float(e) for e in row] for c, row in zip(names, errors)},
      accuracy={c: [float(1 - e) for e in row] for c, row in zip(names, errors)},
      mean_accuracy=float(1.0 - errors.mean()),
      seconds=time.monotonic() - start, settings=dict(settings or {}, batch_size=batch_size),
      versions=versions or {}, warnings=[])
  if clean is not None:
    report["clean_accuracy"] = float(
        accuracy_flags(predict, clean[0], clean[1], batch_size).mean())
  report["table"] = format_table(report)
  if output_dir:
    write_report(output_dir, report, correct, labels_out)
  return report


def write_report(output_dir, report, correct, labels):
  tf.io.gfile.makedirs(output_dir)
  base = os.path.join(output_dir, REPORT_NAME)
  fileio.atomic_write_json(base + ".json", report)
  buf = io.BytesIO()
  np.savez(buf, correct=correct, label=labels, corruptions=np.array(report["corruptions"]),
           severities=np.array(SEVERITIES), errors=1.0 - correct.mean(axis=2))
  fileio.atomic_write_bytes(base + ".npz", buf.getvalue())
  errors = np.array([report["errors"][c] for c in report["corruptions"]])
  png = heatmap_png(errors, report["corruptions"])
  fileio.atomic_write_bytes(base + ".png", png)
  scalars = {"eval/cifar10c/mce": report["mce"]}
  if "clean_accuracy" in report:
    scalars["eval/cifar10c/clean_accuracy"] = report["clean_accuracy"]
  scalars.update({f"eval/cifar10c/error_{c}": e for c, e in report["corruption_errors"].items()})
  reports.write_tensorboard(output_dir, report["settings"].get("checkpoint_step"), scalars,
                            {"eval/cifar10c/table": "```\n" + report["table"] + "\n```"},
                            {"eval/cifar10c/heatmap": tf.image.decode_png(png)[None]})
