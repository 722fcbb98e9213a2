"""Sharded TFRecord writing of a labelled selection, atomic and restartable.

The output folder of a finished run:
  OUT/generated-00000-of-00100.tfrecord ...   the records (schema: rgd.data.tfrecord)
  OUT/metadata.json                           written last: counts, source, labeller, checksums
While a run is going, everything lives in OUT/.work/ (the plan, caches, finished shards); the
shards move to OUT/ only when all of them are written, and metadata.json comes after them. So an
interrupted run never leaves a complete-looking output (the training glob `OUT/*.tfrecord`
matches nothing), and a re-run finds its finished shards in OUT/.work/ and writes only the rest.

Shards are built from a *plan*: the kept images in a seeded random order, cut into consecutive
pieces of `examples_per_shard`. Random order spreads every class over every shard, so the
training reader, which interleaves a few shards at a time, sees class-balanced batches even when
the input file was sorted by class.
"""
import json
import os
import time

import numpy as np

from rgd.data import tfrecord
from rgd.errors import ConfigError
from rgd.runtime import digest, fileio

WORK_DIR = ".work"
PLAN_FILE = "plan.npz"
METADATA_FILE = "metadata.json"
DEFAULT_PREFIX = "generated"


def shard_entry(path, num_examples):
  """metadata.json's description of one written shard: name, count, size in bytes (checked
  before training, rgd.data.shard_check) and sha256 (checked on request)."""
  return {"name": os.path.basename(path), "num_examples": int(num_examples),
          "bytes": int(fileio.gfile.stat(path).length), "sha256": digest.sha256_file(path)}


def make_plan(indices, labels, scores, seed):
  """Puts the kept items in a seeded random order (the order they are written in)."""
  order = np.random.default_rng(seed).permutation(len(indices))
  return {"index": np.asarray(indices, np.int64)[order],
          "label": np.asarray(labels, np.int64)[order],
          "score": np.asarray(scores, np.float64)[order]}


def save_plan(path, plan, config):
  fileio.save_npz(path, config=np.array(json.dumps(config, sort_keys=True)), **plan)


def load_plan(path):
  """-> (plan dict, config dict)."""
  f = fileio.load_npz(path)
  plan = {k: f[k] for k in ("index", "label", "score", "num_seen")}
  config = json.loads(str(f["config"]))
  return plan, config


def shard_ranges(num_examples, examples_per_shard):
  """[(start, stop)] of each shard; the last may be shorter."""
  if examples_per_shard < 1:
    raise ConfigError(f"examples_per_shard must be positive, got {examples_per_shard}")
  return [(s, min(s + examples_per_shard, num_examples))
          for s in range(0, num_examples, examples_per_shard)]


def write_shards(source, plan, folder, examples_per_shard, prefix=DEFAULT_PREFIX,
                 has_scores=True, done_dirs=(), progress=None, shard_delay_s=0.0):
  """Writes the plan's shards into `folder`, skipping every shard already present (complete,
  since shards are renamed into place) there or in one of `done_dirs`. Returns the names."""
  ranges = shard_ranges(len(plan["index"]), examples_per_shard)
  names = []
  for i, (start, stop) in enumerate(ranges):
    name = os.path.basename(tfrecord.shard_name(prefix, i, len(ranges)))
    names.append(name)
    if any(fileio.gfile.exists(fileio.join(d, name)) for d in (folder,) + tuple(done_dirs)):
      if progress is not None:
        progress.update(stop - start)
      continue
    images = source.take(plan["index"][start:stop])
    labels = plan["label"][start:stop]
    conf = np.exp(plan["score"][start:stop].astype(np.float64)) if has_scores else None
    records = (tfrecord.serialize(images[j], labels[j], None if conf is None else conf[j])
               for j in range(stop - start))
    path = fileio.join(folder, name)
    tfrecord.write_shard(path, records)
    if progress is not None:
      progress.update(stop - start)
    if shard_delay_s:
      time.sleep(shard_delay_s)  # Test hook: makes a run slow enough to interrupt.
  return names


def clean_stale_temporaries(folder):
  """Removes temporaries a killed run left behind (tfrecord.write_shard's `.tmp-*`)."""
  if not fileio.gfile.isdir(folder):
    return
  for name in fileio.gfile.listdir(folder):
    if name.startswith(".tmp-") or ".tmp-" in name:
      path = fileio.join(folder, name)
      if not fileio.gfile.isdir(path):
        fileio.gfile.remove(path)
