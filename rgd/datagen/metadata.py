"""What a finished labelling job records (OUT/metadata.json), and how a re-run is matched.

Both runners of rgd.datagen.pipeline.make_tfrecords (in process, and Beam) write the same
fields, built here from the records they wrote; a re-run into the same folder must give the
same job arguments (`job_config`), or it is refused with the list of what differs.
"""
import os
import sys
import time

from absl import logging
import numpy as np

from rgd.errors import ConfigError
from rgd.runtime import fileio

FORMAT_VERSION = 1


class JobMismatchError(ConfigError):
  """The output folder holds (part of) a run with other arguments."""


def job_config(source, keep_per_class, examples_per_shard, seed, prefix, num_classes, labeler,
               writer=None):
  """The job's arguments as saved in the plan and metadata.json (a re-run must match them).
  `writer` is "beam" for the Beam runner (absent in process: older outputs stay valid)."""
  config = dict(source=source, keep_per_class=keep_per_class,
                examples_per_shard=examples_per_shard, seed=seed, prefix=prefix,
                num_classes=num_classes,
                labeler=None if labeler is None else labeler.describe())
  if writer is not None:
    config["writer"] = writer
  return config


def check_same_job(path, saved, config):
  """Raises JobMismatchError listing every argument of `config` that differs from `saved`."""
  diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
  if diff:
    lines = "; ".join(f"{k}: was {saved.get(k)!r}, now {config.get(k)!r}" for k in diff)
    raise JobMismatchError(f"{path} belongs to a run with other arguments ({lines}). Use a new "
                           "--output_dir, or delete the folder to start over")


def warn_short_classes(labels, keep_per_class, num_classes):
  """Logs the classes that kept fewer than keep_per_class images."""
  labels = np.asarray(labels)
  short = [c for c in range(num_classes)
           if keep_per_class and (labels == c).sum() < keep_per_class]
  if short:
    logging.warning("classes %s have fewer than %d images: kept %s", short, keep_per_class,
                    [int((labels == c).sum()) for c in short])


def build(output_dir, config, labels, scores, num_seen, shards, has_scores, argv=None):
  """metadata.json of a finished job.

  `labels`, `scores`: of every written record (any order); `num_seen`: images per labelled
  class before filtering; `shards`: [{"name", "num_examples", "bytes", "sha256"}] in shard
  order."""
  k = len(num_seen)
  # Statistics over a canonical order (by label, then score), so that both runners, which write
  # the records in different orders, give the same float sums.
  order = np.lexsort((np.asarray(scores, np.float64), np.asarray(labels, np.int64)))
  labels = np.asarray(labels, np.int64)[order]
  scores = np.asarray(scores, np.float64)[order]
  keep_per_class = config["keep_per_class"]
  return {
      "format_version": FORMAT_VERSION,
      "num_examples": int(len(labels)),
      "num_classes": k,
      "counts_per_class": np.bincount(labels, minlength=k).tolist(),
      "labelled_per_class": np.asarray(num_seen).tolist(),
      "pattern": fileio.join(output_dir if fileio.is_remote(output_dir) else
                             os.path.abspath(output_dir), f"{config['prefix']}-*.tfrecord"),
      "source": config.get("source"),
      "labeler": config["labeler"],
      "selection": ("all" if keep_per_class is None else
                    f"top {keep_per_class} per class by the labeller's softmax of its label"),
      "confidence": (confidence_stats(labels, np.exp(scores), k) if has_scores else None),
      "shards": shards,
      "job": config,
      "command": argv if argv is not None else sys.argv,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }


def confidence_stats(labels, confidences, num_classes):
  """Per-class and overall statistics of the kept images' confidences (softmax of the label)."""
  def stats(c):
    if len(c) == 0:
      return {"count": 0}
    q = np.percentile(c, [1, 5, 50, 95])
    return {"count": int(len(c)), "min": float(c.min()), "mean": float(c.mean()),
            "max": float(c.max()), "p01": float(q[0]), "p05": float(q[1]),
            "median": float(q[2]), "p95": float(q[3])}
  return {"overall": stats(confidences),
          "per_class": [stats(confidences[labels == k]) for k in range(num_classes)]}
