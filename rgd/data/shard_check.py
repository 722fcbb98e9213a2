"""Generated TFRecord shards: checks before training, and the shard behind a read error.

Before training (`check_generated_shards`, cheap: one stat per shard and one record read):
  * the glob matches at least one file, and no file is empty (an empty shard is a valid, empty
    TFRecord file: with every shard empty the repeating reader would spin forever) unless
    metadata.json records it as empty (the Beam runner's hash sharding may);
  * when the shards' folder holds `metadata.json` (rgd.datagen.pipeline), every shard it
    lists that the glob selects exists with the size it records ('bytes'); with
    `verify_checksums` also its sha256 (a full read of the data: opt in);
  * the first record of the first shard parses and its image shape is the real images' shape.
During training a truncated or corrupt record surfaces as `tf.errors.DataLossError` from the
iterator, whose message gives a byte offset but not the file: the interleaved reader mixes 16
shards. `raise_for_read_error` then scans this pipeline's shards one by one and names the
culprit. The scan runs only after a failure, so the training input pipeline is untouched (no
per-record file tag: the error is raised inside the reader, before any record exists to carry a
tag, so tagging could not name the file anyway).
"""
import fnmatch
import posixpath
import re

import gin
import numpy as np
import tensorflow as tf

from rgd.errors import DataError
from rgd.runtime import digest, fileio

METADATA_FILE = "metadata.json"
_HEADER_BYTES = 16  # length (8) + its CRC (4) before each record, data CRC (4) after it


def list_files(pattern, num_pipelines=1, pipeline_id=0):
  """The shards `pattern` matches (sorted), and the ones this input pipeline reads (the same
  split as rgd.data.tfrecord.read_examples: Dataset.shard)."""
  files = sorted(fileio.gfile.glob(pattern))
  if not files:
    raise DataError(f"generated_pattern {pattern!r} matches no file")
  return files, files[pipeline_id::num_pipelines]


@gin.configurable(denylist=["pattern", "image_shape"])
def check_generated_shards(pattern, image_shape, verify_checksums=False):
  """Raises DataError naming the file if the shards cannot be what training needs. Bind
  `check_generated_shards.verify_checksums=True` to also compare every shard's sha256 with
  metadata.json (reads all the data once)."""
  files, _ = list_files(pattern)
  sizes = {f: fileio.gfile.stat(f).length for f in files}
  expected_empty = set()  # shards metadata.json records as empty (Beam's hash sharding)
  for folder in sorted({posixpath.dirname(f) for f in files}):
    meta_path = fileio.join(folder, METADATA_FILE)
    if fileio.gfile.exists(meta_path):
      expected_empty |= _check_against_metadata(meta_path, pattern, sizes, verify_checksums)
  empty = [f for f in files if sizes[f] == 0 and f not in expected_empty]
  if empty:
    raise DataError(f"{empty[0]}: empty shard (0 bytes)" +
                    (f"; {len(empty) - 1} more empty" if len(empty) > 1 else ""))
  nonempty = [f for f in files if sizes[f]]
  if not nonempty:
    raise DataError(f"generated_pattern {pattern!r}: every shard is empty")
  _check_first_record(nonempty[0], image_shape)


def _check_against_metadata(meta_path, pattern, sizes, verify_checksums):
  try:
    meta = fileio.read_json(meta_path)
  except ValueError as e:
    raise DataError(f"{meta_path}: not valid JSON ({e})") from e
  folder = posixpath.dirname(meta_path)
  empty = set()
  for entry in meta.get("shards", []):
    entry = entry if isinstance(entry, dict) else {"name": entry}  # older: a list of names
    path = fileio.join(folder, entry["name"])
    if not fnmatch.fnmatchcase(path, pattern):
      continue
    if path not in sizes:
      raise DataError(f"{path}: listed in {meta_path} but missing")
    if "bytes" in entry and sizes[path] != entry["bytes"]:
      raise DataError(f"{path}: {sizes[path]} bytes, but {meta_path} records {entry['bytes']} "
                      "(truncated, or a partial copy)")
    if verify_checksums and entry.get("sha256") and digest.sha256_file(path) != entry["sha256"]:
      raise DataError(f"{path}: sha256 differs from the one {meta_path} records (corrupt copy)")
    if entry.get("num_examples") == 0:
      empty.add(path)
  return empty


def _check_first_record(path, image_shape):
  try:
    records = list(tf.data.TFRecordDataset(path).take(1).as_numpy_iterator())
    shape = tf.io.parse_single_example(records[0], {
        "shape": tf.io.FixedLenFeature([3], tf.int64)})["shape"].numpy().tolist()
  except (tf.errors.OpError, IndexError) as e:
    raise DataError(f"{path}: first record unreadable ({_first_line(e)})") from e
  if shape != list(image_shape):
    raise DataError(f"{path}: images of shape {tuple(shape)}, but the real data's are "
                    f"{tuple(image_shape)}")


def find_bad_shard(files, image_shape=None, batch=4096):
  """The first problem in `files`, as a message naming the file and where in it; None if every
  record reads (and has `image_shape`, when given)."""
  for path in files:
    ds = tf.data.TFRecordDataset(path).batch(batch).map(lambda r: (
        tf.strings.length(r),
        tf.io.parse_example(r, {"shape": tf.io.FixedLenFeature([3], tf.int64)})["shape"]))
    index, offset = 0, 0
    try:
      for lengths, shapes in ds.as_numpy_iterator():
        if image_shape is not None:
          bad = np.flatnonzero((shapes != np.asarray(image_shape)).any(axis=1))
          if bad.size:
            i = int(bad[0])
            return (f"{path}: record {index + i} (byte offset "
                    f"{offset + int(lengths[:i].sum()) + i * _HEADER_BYTES}) has an image of "
                    f"shape {tuple(shapes[i].tolist())}, but the real data's are "
                    f"{tuple(image_shape)}")
        index += len(lengths)
        offset += int(lengths.sum()) + len(lengths) * _HEADER_BYTES
    except tf.errors.DataLossError as e:
      index, offset = _count_good_records(path)
      return (f"{path}: record {index} (byte offset {offset}) is truncated or corrupt "
              f"({_first_line(e)})")
    except tf.errors.InvalidArgumentError as e:  # a record that is not a tf.train.Example
      return f"{path}: a record after record {index} does not parse ({_first_line(e)})"
  return None


def _count_good_records(path):
  """(index, byte offset) of the first record of `path` that does not read: one record at a
  time, only for the shard already known to be bad."""
  index, offset = 0, 0
  try:
    for length in tf.data.TFRecordDataset(path).map(tf.strings.length).as_numpy_iterator():
      index += 1
      offset += int(length) + _HEADER_BYTES
  except tf.errors.DataLossError:
    pass
  return index, offset


def raise_for_read_error(error, pattern, image_shape, num_pipelines=1, pipeline_id=0):
  """Called with the error that reading the training data raised; raises DataError naming the
  shard when one of this pipeline's shards is the cause, and returns otherwise (the caller
  re-raises the original error, which is then no data problem)."""
  _, mine = list_files(pattern, num_pipelines, pipeline_id)
  shape = list(image_shape) if isinstance(error, tf.errors.InvalidArgumentError) else None
  culprit = find_bad_shard(mine, shape)
  if culprit:
    raise DataError(f"reading generated data {pattern!r}: {culprit}") from error
  if isinstance(error, tf.errors.DataLossError):
    raise DataError(f"reading generated data {pattern!r}: {_first_line(error)} (no shard fails "
                    "when read again: a transient storage error?)") from error


def _first_line(e):
  """The gist of a TF error: its first line without the op and function names."""
  text = (getattr(e, "message", None) or str(e)).strip()
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "", text)
  return text.splitlines()[0].strip() if text else type(e).__name__
