"""The whole job of `tools/make_tfrecords.py`: (generate) -> label -> select -> write shards.

Two passes over the images so that nothing holds the whole set in memory:
  1. label every image in batches, keeping the best `keep_per_class` per class (or all) in a
     bounded buffer; the selection is saved as OUT/.work/plan.npz (atomically);
  2. write the plan's shards, reading the kept images back by index.
A re-run with the same arguments reuses the plan and the finished shards; a re-run with
different arguments into the same folder is refused (the message lists what differs).
"""
import hashlib
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from rgd.runtime import fileio, progress as progress_lib
from rgd.errors import DataError
from rgd.datagen import labeling, writer

gfile = fileio.gfile

FORMAT_VERSION = 1


class JobMismatchError(DataError):
  """The output folder holds (part of) a run with other arguments."""


def _check_same_job(path, saved, config):
  diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
  if diff:
    lines = "; ".join(f"{k}: was {saved.get(k)!r}, now {config.get(k)!r}" for k in diff)
    raise JobMismatchError(f"{path} belongs to a run with other arguments ({lines}). Use a new "
                           "--output_dir, or delete the folder to start over")


def make_tfrecords(output_dir, config, open_source, labeler=None, keep_per_class=None,
                   num_classes=None, examples_per_shard=10_000, batch_size=256, seed=0,
                   prefix=writer.DEFAULT_PREFIX, keep_cache=False, argv=None, stream=None,
                   shard_delay_s=0.0):
  """Runs (or finishes) one job; returns the metadata dict.

  `config`: a JSON-able description of the input (file, generator settings); a re-run must give
  the same. `open_source(cache_dir)` -> sources.Source, called only when images are needed (it
  may generate them into cache_dir). `labeler`: a labeling.Labeler or None to keep the source's
  own labels. `keep_per_class`: None keeps every image.
  """
  work = fileio.join(output_dir, writer.WORK_DIR)
  # Sources memory-map their cache (extracted .npz members, generated .npy), so it stays on local
  # disk even when the output goes to a bucket.
  cache = (fileio.join(work, "cache") if not fileio.is_remote(output_dir) else os.path.join(
      tempfile.gettempdir(), "rgd-cache", hashlib.sha1(output_dir.encode()).hexdigest()[:16]))
  plan_path = fileio.join(work, writer.PLAN_FILE)
  meta_path = fileio.join(output_dir, writer.METADATA_FILE)
  config = job_config(config, keep_per_class, examples_per_shard, seed, prefix, num_classes,
                      labeler)

  if gfile.exists(meta_path):
    meta = fileio.read_json(meta_path)
    _check_same_job(meta_path, meta["job"], config)
    logging.info("%s is complete already", output_dir)
    return meta
  gfile.makedirs(work)
  if not gfile.exists(plan_path) and any(n.endswith(".tfrecord")
                                         for n in gfile.listdir(output_dir)):
    raise JobMismatchError(f"{output_dir} already holds TFRecords that this tool did not leave "
                           "unfinished there; use a new --output_dir")
  writer.clean_stale_temporaries(work)
  source = None

  # Pass 1: label and select (skipped when a saved plan exists).
  if gfile.exists(plan_path):
    plan, saved = writer.load_plan(plan_path)
    _check_same_job(plan_path, saved, config)
    logging.info("Reusing the selection in %s", plan_path)
  else:
    if labeler is None and keep_per_class is not None:
      raise DataError("keeping the top images per class needs a labeller to score them "
                      "(--labeler)")
    source = open_source(cache)
    if labeler is None and source.labels is None:
      raise DataError(f"{source.path}: has no labels and no labeller was given (--labeler)")
    k = _num_classes(source, labeler, num_classes)
    if labeler is None:
      source.check_labels(k)
      selector = labeling.TopKPerClass(k, None)
      selector.add(np.arange(source.num_images), source.labels,
                   np.zeros(source.num_images, np.float32))
      indices, labels, scores = selector.result()
    else:
      labeler.check(k, source.image_shape)
      selector = labeling.TopKPerClass(k, keep_per_class)
      bar = progress_lib.Progress(source.num_images, "labelling", "img", stream=stream)
      indices, labels, scores = labeling.label_source(source, labeler, selector, batch_size, bar)
      bar.close()
      short = [c for c in range(k) if keep_per_class and (labels == c).sum() < keep_per_class]
      if short:
        logging.warning("classes %s have fewer than %d images: kept %s", short, keep_per_class,
                        [int((labels == c).sum()) for c in short])
    if len(indices) == 0:
      raise DataError(f"{source.path}: no images were selected")
    plan = writer.make_plan(indices, labels, scores, seed)
    plan["num_seen"] = selector.num_seen
    writer.save_plan(plan_path, plan, config)
  num_examples = len(plan["index"])

  # Pass 2: write the shards not written yet.
  ranges = writer.shard_ranges(num_examples, examples_per_shard)
  names = [os.path.basename(writer.tfrecord.shard_name(prefix, i, len(ranges)))
           for i in range(len(ranges))]
  missing = [n for n in names if not gfile.exists(fileio.join(work, n))
             and not gfile.exists(fileio.join(output_dir, n))]
  if missing:
    source = source or open_source(cache)
    bar = progress_lib.Progress(num_examples, "writing", "img", stream=stream)
    writer.write_shards(source, plan, work, examples_per_shard, prefix,
                        has_scores=labeler is not None, done_dirs=(output_dir,),
                        progress=bar, shard_delay_s=shard_delay_s)
    bar.close()

  # Finish: checksums, move the shards into place, then metadata.json last.
  shards = []
  for n, (start, stop) in zip(names, ranges):
    path = fileio.join(work, n)
    if not gfile.exists(path):
      path = fileio.join(output_dir, n)
    shards.append(writer.shard_entry(path, stop - start))
  for n in names:
    if gfile.exists(fileio.join(work, n)):
      gfile.rename(fileio.join(work, n), fileio.join(output_dir, n), overwrite=True)
  meta = build_metadata(output_dir, config, plan["label"], plan["score"], plan["num_seen"],
                        shards, has_scores=labeler is not None, argv=argv)
  fileio.atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
  if not keep_cache:
    if gfile.exists(work):
      gfile.rmtree(work)
  return meta


def job_config(config, keep_per_class, examples_per_shard, seed, prefix, num_classes, labeler):
  """The job's arguments as saved in the plan and metadata.json (a re-run must match them)."""
  return dict(config, keep_per_class=keep_per_class, examples_per_shard=examples_per_shard,
              seed=seed, prefix=prefix, num_classes=num_classes,
              labeler=None if labeler is None else labeler.describe())


def build_metadata(output_dir, config, labels, scores, num_seen, shards, has_scores, argv=None):
  """metadata.json of a finished job (this module's and rgd.datagen.beam_pipeline's).

  `labels`, `scores`: of every written record (any order); `num_seen`: images per labelled
  class before filtering; `shards`: [{"name", "num_examples", "sha256"}] in shard order."""
  k = len(num_seen)
  # Statistics over a canonical order (by label, then score), so that both paths, which write
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
      "confidence": (writer.confidence_stats(labels, np.exp(scores), k)
                     if has_scores else None),
      "shards": shards,
      "job": config,
      "command": argv if argv is not None else sys.argv,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }


def _num_classes(source, labeler, num_classes):
  if num_classes is not None:
    k = int(num_classes)
  elif labeler is not None:
    k = labeler.num_classes
  elif source.labels is not None:
    k = int(source.labels.max()) + 1
  else:
    raise DataError(f"{source.path}: cannot tell the number of classes; give --num_classes")
  return k
