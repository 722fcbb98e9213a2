"""The Beam runner of the labelling job (rgd.datagen.pipeline.make_tfrecords(runner=...)).

Seed 001 trains on up to 100M generated images (Gowal et al. 2021, Sec. 4); labelling them is
days of one machine, so the same job (label -> keep the top k per class -> sharded TFRecords +
metadata.json) also runs as a Beam pipeline, on one machine (DirectRunner, several processes)
or a cluster (Dataflow, Flink, Spark), with the same flags. The job (rgd.datagen.pipeline) has
made its checks and opened the images; `run` builds and runs the pipeline. Stages:

  Create(chunks)        the source cut once (rgd.datagen.sources.Source.chunks): chunks of
                        `chunk_size` consecutive images; a worker reads only its chunk, through
                        tf.io.gfile
  Score (top-k only)    labels a chunk in batches (the Keras labeller is loaded once per worker,
                        in DoFn.setup), keeps the chunk's best k per class, emits
                        (class, (score, -id)); Top.LargestPerKey keeps the best k per class
                        exactly: a combiner, each worker pre-combining its own bundles, so no
                        stage ever holds more than k candidates of a class
  Records               reads each chunk again and serialises the kept images (top-k: looked up
                        in the selection, a side input of 24 bytes per kept image; otherwise
                        labelled here), keyed by shard
  WriteShard            one shard per key, written atomically (rgd.data.tfrecord.write_shard)
  Finish                moves the shards into place, then writes metadata.json last

Equal to the in-process runner: the ids are the source's indices, the score is the
same Labeler's, the ranking is the same (score descending, then id ascending: the tuple
(score, -id) orders as labeling.rank_order), and chunk_size is a multiple of batch_size, so the
labeller sees the same batches (same floats) as labeling.label_source. So the records of every
class are exactly the single-process ones (tests/test_beam_pipeline.py), and metadata.json has
the same fields and values except:
  * shard assignment: a record's shard is a seeded hash of its id (splitmix64), not a position in
    a seeded permutation (which needs the whole kept list in one place: 800 MB at 100M images).
    There are as many shards (ceil(kept / examples_per_shard)), holding *about*
    examples_per_shard records each (binomial spread; `shards[i].num_examples` says how many;
    a shard may even be empty for tiny sets); within a shard records are sorted by the hash, so
    the output is deterministic whatever the runner's parallelism;
  * `job.writer` is "beam" and `beam` records the runner and its options;
  * `created`, `command`.
"""
import json
import math
import time

from absl import logging
import apache_beam as beam
from apache_beam.options import pipeline_options as beam_options
import numpy as np

from rgd.data import tfrecord
from rgd.datagen import labeling, metadata, sources, writer
from rgd.errors import DataError
from rgd.runtime import digest, fileio

gfile = fileio.gfile
BEAM_DIR = "beam"  # OUT/.work/beam: shards of a Beam run before they move into OUT.


def shard_hash(ids, seed):
  """splitmix64 (Steele et al. 2014) of each id, offset by the seed: uint64 [n]."""
  with np.errstate(over="ignore"):
    z = np.asarray(ids, np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 1) % 2**64)
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class _Labelling(beam.DoFn):
  """Base: the Keras labeller, loaded once per worker (DoFn instance) in setup()."""

  def __init__(self, labeler_path, from_logits, batch_size):
    super().__init__()
    self._path, self._from_logits, self._batch = labeler_path, from_logits, batch_size
    self._labeler = None

  def setup(self):
    if self._path is not None:
      self._labeler = labeling.Labeler.load(self._path, from_logits=self._from_logits)

  def _label(self, images):
    """Batches of batch_size from the chunk's first image: the single-process batches."""
    labels, scores = [], []
    for s in range(0, len(images), self._batch):
      l, sc = self._labeler(images[s:s + self._batch])
      labels.append(l)
      scores.append(sc)
    return np.concatenate(labels), np.concatenate(scores)


class ScoreChunk(_Labelling):
  """chunk -> (class, (score, -id)) for the chunk's best k of each class; 'seen' counts."""

  def __init__(self, labeler_path, from_logits, batch_size, k):
    super().__init__(labeler_path, from_logits, batch_size)
    self._k = k

  def process(self, chunk):
    ids, images, _ = chunk.read()
    labels, scores = self._label(images)
    for c in np.unique(labels):
      rows = np.flatnonzero(labels == c)
      yield beam.pvalue.TaggedOutput("seen", (int(c), len(rows)))
      # A chunk's candidates beyond its own k cannot be in the global top k.
      best = rows[labeling.rank_order(scores[rows], ids[rows])[:self._k]]
      for i in best:
        yield int(c), (float(scores[i]), -int(ids[i]))


def kept_table(per_class):
  """[(class, [(score, -id)])] -> the selection as sorted arrays {id, label, score}."""
  ids, labels, scores = [], [], []
  for c, items in per_class:
    ids += [-i for _, i in items]
    scores += [s for s, _ in items]
    labels += [c] * len(items)
  order = np.argsort(np.asarray(ids, np.int64), kind="stable")
  return {"id": np.asarray(ids, np.int64)[order], "label": np.asarray(labels, np.int64)[order],
          "score": np.asarray(scores, np.float64)[order]}


class RecordsFn(_Labelling):
  """chunk -> ((shard, num_shards), [(hash, id, serialized example, label, score)]).

  With the `kept` side input only the selected images are emitted, with their saved label and
  score; otherwise every image, labelled here or with its input label ('seen' counts then)."""

  def __init__(self, labeler_path, from_logits, batch_size, seed, examples_per_shard,
               num_images, num_classes, where):
    super().__init__(labeler_path, from_logits, batch_size)
    self._seed, self._per_shard = seed, examples_per_shard
    self._num_images, self._num_classes, self._where = num_images, num_classes, where

  def process(self, chunk, kept=None):
    ids, images, labels = chunk.read()
    scores = None
    if kept is not None:
      pos = np.minimum(np.searchsorted(kept["id"], ids), max(len(kept["id"]) - 1, 0))
      hit = np.flatnonzero(kept["id"][pos] == ids) if len(kept["id"]) else np.zeros(0, int)
      ids, images = ids[hit], images[hit]
      labels, scores = kept["label"][pos[hit]], kept["score"][pos[hit]]
      total = len(kept["id"])
    else:
      if self._labeler is not None:
        labels, scores = self._label(images)
      elif self._num_classes is not None:
        sources.check_label_range(labels, ids, self._num_classes, self._where)
      for c, n in zip(*np.unique(labels, return_counts=True)):
        yield beam.pvalue.TaggedOutput("seen", (int(c), int(n)))
      total = self._num_images
    num_shards = max(1, math.ceil(total / self._per_shard))
    h = shard_hash(ids, self._seed)
    shard = h % np.uint64(num_shards)
    conf = np.exp(scores) if scores is not None else None  # As writer.write_shards.
    # One element per (chunk, shard), not per record: Beam's cost is per element.
    for s in np.unique(shard):
      rows = np.flatnonzero(shard == s)
      yield ((int(s), num_shards), [
          (int(h[j]), int(ids[j]),
           tfrecord.serialize(images[j], labels[j], None if conf is None else conf[j]),
           int(labels[j]), float(scores[j]) if scores is not None else 0.0) for j in rows])


class WriteShard(beam.DoFn):
  """((shard, num_shards), records) -> the shard file, records in hash order; yields its entry
  for metadata.json plus the labels and scores of its records (for the statistics)."""

  def __init__(self, folder, prefix):
    super().__init__()
    self._folder, self._prefix = folder, prefix

  def process(self, element):
    (index, num_shards), lists = element
    items = sorted((it for l in lists for it in l), key=lambda it: (it[0], it[1]))
    name = tfrecord.shard_name(self._prefix, index, num_shards)
    path = fileio.join(self._folder, name)
    tfrecord.write_shard(path, (it[2] for it in items))
    yield {"index": index, "num_shards": num_shards, "name": name,
           "num_examples": len(items), "sha256": digest.sha256_file(path),
           "bytes": int(fileio.gfile.stat(path).length),
           "label": np.array([it[3] for it in items], np.int32),
           "score": np.array([it[4] for it in items], np.float64)}


class Finish(beam.DoFn):
  """Runs once, after every shard (side inputs): moves them into OUT, writes metadata.json."""

  def __init__(self, output_dir, config, num_classes, has_scores, argv, beam_info, keep_cache):
    super().__init__()
    self._out, self._config, self._k = output_dir, config, num_classes
    self._has_scores, self._argv, self._beam = has_scores, argv, beam_info
    self._keep_cache = keep_cache

  def process(self, unused, shards, seen):
    work = fileio.join(self._out, writer.WORK_DIR)
    folder = fileio.join(work, BEAM_DIR)
    seen = dict(seen)
    if not shards or sum(s["num_examples"] for s in shards) == 0:
      raise DataError(f"{self._config['source'].get('path')}: no images were selected")
    k = self._k if self._k is not None else max(seen) + 1
    num_shards = shards[0]["num_shards"]
    by_index = {s["index"]: s for s in shards}
    entries = []
    for i in range(num_shards):
      if i not in by_index:  # Hash sharding left it empty: still write it, so the names hold.
        name = tfrecord.shard_name(self._config["prefix"], i, num_shards)
        tfrecord.write_shard(fileio.join(folder, name), iter(()))
        by_index[i] = {"name": name, "num_examples": 0, "bytes": 0,
                       "sha256": digest.sha256_file(fileio.join(folder, name)),
                       "label": np.zeros(0, np.int32), "score": np.zeros(0)}
      s = by_index[i]
      entries.append({"name": s["name"], "num_examples": s["num_examples"],
                      "bytes": s["bytes"], "sha256": s["sha256"]})
    labels = np.concatenate([by_index[i]["label"] for i in range(num_shards)]).astype(np.int64)
    scores = np.concatenate([by_index[i]["score"] for i in range(num_shards)])
    num_seen = np.array([seen.get(c, 0) for c in range(k)], np.int64)
    metadata.warn_short_classes(labels, self._config["keep_per_class"], k)
    for e in entries:
      src = fileio.join(folder, e["name"])
      if gfile.exists(src) or not gfile.exists(fileio.join(self._out, e["name"])):
        # (A retried Finish finds the shards it moved already in place.)
        gfile.rename(src, fileio.join(self._out, e["name"]), overwrite=True)
    meta = metadata.build(self._out, self._config, labels, scores, num_seen, entries,
                                   self._has_scores, self._argv)
    meta["beam"] = self._beam
    fileio.atomic_write_text(fileio.join(self._out, writer.METADATA_FILE),
                             json.dumps(meta, indent=1) + "\n")
    if not self._keep_cache and gfile.exists(work):
      gfile.rmtree(work)
    yield meta["num_examples"]


def run(output_dir, source, config, labeler, num_classes, batch_size, chunk_size, argv,
        options, keep_cache=False):
  """Builds and runs the job's Beam pipeline; returns the metadata dict (None when the runner
  does not wait for the job, e.g. Dataflow without --wait). Called by
  rgd.datagen.pipeline.make_tfrecords after its checks: `source` is the opened images,
  `config` the job's arguments (metadata.job_config), `labeler` loaded from a path every
  worker can read, `chunk_size` a multiple of `batch_size`, `options` Beam's command-line
  strings ("--runner=DataflowRunner", ...)."""
  keep_per_class, examples_per_shard = config["keep_per_class"], config["examples_per_shard"]
  work = fileio.join(output_dir, writer.WORK_DIR)
  meta_path = fileio.join(output_dir, writer.METADATA_FILE)
  folder = fileio.join(work, BEAM_DIR)
  if gfile.exists(folder):
    gfile.rmtree(folder)  # An interrupted Beam run's shards: its bundles are redone anyway.
  gfile.makedirs(folder)

  chunk_list = source.chunks(chunk_size)
  args = list(options)
  pipeline_options = beam_options.PipelineOptions(args)
  runner = pipeline_options.view_as(beam_options.StandardOptions).runner
  beam_info = {"runner": runner, "options": args, "chunk_size": chunk_size,
               "num_chunks": len(chunk_list)}
  lpath = None if labeler is None else labeler.path
  logits = True if labeler is None else labeler.from_logits
  logging.info("Beam (%s): %d images of %s in %d chunks", runner, source.num_images,
               source.path, len(chunk_list))

  p = beam.Pipeline(options=pipeline_options)
  chunk_pc = p | "Chunks" >> beam.Create(chunk_list)  # Create reshuffles: chunks spread.
  make_records = RecordsFn(lpath, logits, batch_size, config["seed"], examples_per_shard,
                           source.num_images, num_classes, source.path)
  if labeler is not None and keep_per_class is not None:
    scored = chunk_pc | "Score" >> beam.ParDo(
        ScoreChunk(lpath, logits, batch_size, keep_per_class)).with_output_types(
            beam.typehints.KV[int, beam.typehints.Any]).with_outputs("seen", main="top")
    kept = (scored.top
            | "TopPerClass" >> beam.combiners.Top.LargestPerKey(keep_per_class)
            | "Classes" >> beam.combiners.ToList()
            | "Selection" >> beam.Map(kept_table))
    records = chunk_pc | "Records" >> beam.ParDo(make_records,
                                                  kept=beam.pvalue.AsSingleton(kept))
    seen = scored.seen
  else:
    out = chunk_pc | "Records" >> beam.ParDo(make_records).with_outputs("seen", main="records")
    records, seen = out.records, out.seen
  seen = seen | "CountSeen" >> beam.CombinePerKey(sum)
  shards = (records | "ByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(folder, config["prefix"])))
  _ = (p | "Once" >> beam.Create([None])
       | "Finish" >> beam.ParDo(Finish(output_dir, config, num_classes, labeler is not None,
                                       argv, beam_info, keep_cache),
                                shards=beam.pvalue.AsList(shards),
                                seen=beam.pvalue.AsList(seen)))
  result = p.run()
  start = time.time()
  state = result.wait_until_finish()
  logging.info("Beam job %s after %.1f s", state, time.time() - start)
  if not gfile.exists(meta_path):
    return None
  return fileio.read_json(meta_path)
