"""The labelling job: (generate) -> label -> select -> write shards + metadata.json.

One job, `make_tfrecords`, with one set of checks and two runners:
  * in process (`runner=None`): two passes over the images, so that nothing holds the whole
    set in memory:
      1. label every image in batches, keeping the best `keep_per_class` per class (or all) in
         a bounded buffer; the selection is saved as OUT/.work/plan.npz (atomically);
      2. write the plan's shards, reading the kept images back by index.
    A re-run with the same arguments reuses the plan and the finished shards.
  * on Apache Beam (`runner='DirectRunner'`, 'DataflowRunner', ...): the same records, labelled
    and written by many workers (rgd.datagen.beam_pipeline; docs/beam.md).
A re-run with different arguments into the same folder is refused (the message lists what
differs), whichever runner wrote it.
"""
import hashlib
import json
import os
import tempfile

from absl import logging
import numpy as np

from rgd.datagen import labeling, metadata, writer
from rgd.errors import ConfigError, DataError
from rgd.runtime import fileio, progress as progress_lib

gfile = fileio.gfile

DEFAULT_CHUNK = 4096  # Images per Beam work item (rounded up to a multiple of batch_size).


def worker_share(output_dir, keep_per_class, worker, num_workers):
  """(output folder, keep_per_class) of one worker of a job split over `num_workers`: its own
  OUT/worker-w-of-W/ (OUT itself for one worker; train on OUT/worker-*/generated-*.tfrecord)
  and its share of the per-class top-k (each worker ranks its own images)."""
  if num_workers == 1:
    return output_dir, keep_per_class
  folder = output_dir.rstrip("/") + f"/worker-{worker:05d}-of-{num_workers:05d}"
  if keep_per_class:
    base, extra = divmod(int(keep_per_class), num_workers)
    keep_per_class = base + (worker < extra)
  return folder, keep_per_class


def make_tfrecords(output_dir, images, labeler=None, keep_per_class=None, num_classes=None,
                   examples_per_shard=10_000, batch_size=256, seed=0,
                   prefix=writer.DEFAULT_PREFIX, keep_cache=False, argv=None, stream=None,
                   shard_delay_s=0.0, runner=None, beam_options=(), chunk_size=DEFAULT_CHUNK):
  """Runs (or finishes) one job; returns the metadata dict (None when a Beam runner does not
  wait for the job, e.g. Dataflow without --wait).

  `images`: rgd.datagen.generators.Images (`generators.make("files:x.npz")`, "gaussian", ...);
  opened only when images are needed. `labeler`: a labeling.Labeler, or None to keep the
  images' own labels. `keep_per_class`: None keeps every image. `runner`: None runs in this
  process; a Beam runner name runs the Beam pipeline, with `beam_options` (command-line
  strings such as "--direct_num_workers=2") and `chunk_size` images per work item; it needs
  images every worker can read and a labeller loaded from a path (Labeler.load). An interrupted
  Beam job is rerun from the start (Beam runners retry failed work themselves).
  """
  output_dir, keep_per_class = worker_share(output_dir, keep_per_class, images.worker,
                                            images.num_workers)
  _check_arguments(images, labeler, keep_per_class, examples_per_shard, batch_size, runner)
  config = metadata.job_config(images.source, keep_per_class, examples_per_shard, seed, prefix,
                               num_classes, labeler, writer="beam" if runner else None)
  work = fileio.join(output_dir, writer.WORK_DIR)
  plan_path = fileio.join(work, writer.PLAN_FILE)
  meta_path = fileio.join(output_dir, writer.METADATA_FILE)

  if gfile.exists(meta_path):
    meta = fileio.read_json(meta_path)
    metadata.check_same_job(meta_path, meta["job"], config)
    logging.info("%s is complete already", output_dir)
    return meta
  gfile.makedirs(work)
  has_plan = gfile.exists(plan_path)
  if has_plan and runner:
    raise metadata.JobMismatchError(
        f"{output_dir} holds an unfinished in-process run (.work/plan.npz); finish it without "
        "a runner (no --runner), or use a new --output_dir")
  if not has_plan and any(n.endswith(".tfrecord") for n in gfile.listdir(output_dir)):
    raise metadata.JobMismatchError(f"{output_dir} already holds TFRecords that this job did "
                                    "not leave unfinished there; use a new --output_dir")
  if runner:
    # Every worker reads the cache (extracted .npz members), so it lives with the output.
    source = images.open(fileio.join(work, "cache"))
    k = _check_source(source, labeler, num_classes)
    from rgd.datagen import beam_pipeline  # pylint: disable=g-import-not-at-top
    return beam_pipeline.run(
        output_dir, source, config, labeler=labeler, num_classes=k, batch_size=batch_size,
        chunk_size=batch_size * max(1, -(-chunk_size // batch_size)), argv=argv,
        options=[f"--runner={runner}"] + list(beam_options), keep_cache=keep_cache)
  return _run_in_process(output_dir, images, config, labeler, keep_per_class, num_classes,
                         examples_per_shard, batch_size, seed, prefix, keep_cache, argv, stream,
                         shard_delay_s)


def _check_arguments(images, labeler, keep_per_class, examples_per_shard, batch_size, runner):
  """The configuration checks, before anything is read or written."""
  if labeler is None and keep_per_class is not None:
    raise ConfigError("keeping the top images per class needs a labeller to score them "
                      "(--labeler)")
  if keep_per_class is not None and keep_per_class < 1:
    raise ConfigError(f"keep_per_class must be positive or None, got {keep_per_class}")
  if examples_per_shard < 1:
    raise ConfigError(f"examples_per_shard must be positive, got {examples_per_shard}")
  if batch_size < 1:
    raise ConfigError(f"batch_size must be positive, got {batch_size}")
  if runner:
    if not images.shared:
      raise ConfigError(f"the Beam runner needs images every worker can read; "
                        f"{images.source.get('kind')!r} generates into a local cache: write "
                        "its samples first, without a runner, and give them as files (--input)")
    if labeler is not None and labeler.path is None:
      raise ConfigError("the Beam runner loads the labeller on every worker: give a Labeler "
                        "loaded from a path (Labeler.load)")


def _check_source(source, labeler, num_classes):
  """The checks of the opened images against the labeller; -> the number of classes, or None
  when only the labels can tell (known after reading them)."""
  if labeler is None and not source.has_labels:
    raise DataError(f"{source.path}: has no labels and no labeller was given (--labeler)")
  k = int(num_classes) if num_classes is not None else (
      labeler.num_classes if labeler is not None else None)
  if labeler is not None:
    labeler.check(k, source.image_shape)
  return k


def _run_in_process(output_dir, images, config, labeler, keep_per_class, num_classes,
                    examples_per_shard, batch_size, seed, prefix, keep_cache, argv, stream,
                    shard_delay_s):
  work = fileio.join(output_dir, writer.WORK_DIR)
  plan_path = fileio.join(work, writer.PLAN_FILE)
  # Generators write their samples into the cache with local file calls, so it stays on local
  # disk even when the output goes to a bucket.
  cache = (fileio.join(work, "cache") if not fileio.is_remote(output_dir) else os.path.join(
      tempfile.gettempdir(), "rgd-cache", hashlib.sha1(output_dir.encode()).hexdigest()[:16]))
  writer.clean_stale_temporaries(work)
  source = None

  # Pass 1: label and select (skipped when a saved plan exists).
  if gfile.exists(plan_path):
    plan, saved = writer.load_plan(plan_path)
    metadata.check_same_job(plan_path, saved, config)
    logging.info("Reusing the selection in %s", plan_path)
  else:
    source = images.open(cache)
    k = _check_source(source, labeler, num_classes)
    if labeler is None:
      k = k if k is not None else int(source.labels.max()) + 1
      source.check_labels(k)
      selector = labeling.TopKPerClass(k, None)
      selector.add(np.arange(source.num_images), source.labels,
                   np.zeros(source.num_images, np.float32))
      indices, labels, scores = selector.result()
    else:
      selector = labeling.TopKPerClass(k, keep_per_class)
      bar = progress_lib.Progress(source.num_images, "labelling", "img", stream=stream)
      indices, labels, scores = labeling.label_source(source, labeler, selector, batch_size, bar)
      bar.close()
      metadata.warn_short_classes(labels, keep_per_class, k)
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
    source = source or images.open(cache)
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
  meta = metadata.build(output_dir, config, plan["label"], plan["score"], plan["num_seen"],
                        shards, has_scores=labeler is not None, argv=argv)
  fileio.atomic_write_text(fileio.join(output_dir, writer.METADATA_FILE),
                           json.dumps(meta, indent=1) + "\n")
  if not keep_cache:
    if gfile.exists(work):
      gfile.rmtree(work)
  return meta
