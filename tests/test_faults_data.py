"""Damaged generated data: every fault is a DataError naming the file (and the
record's offset when known), before training when a cheap check finds it, else when read."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images, write_npz_dataset
from rgd.data import shard_check, tfrecord
from rgd.errors import DataError
from rgd.datagen import writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SHAPE = (32, 32, 3)


def write_shards(folder, num_shards=3, per_shard=8, size=32, metadata=True):
  """`num_shards` shards of `per_shard` records (+ metadata.json as rgd.datagen.pipeline
  writes it); returns the paths."""
  os.makedirs(folder, exist_ok=True)
  images, labels = make_images(num_shards * per_shard, size=size, seed=3)
  paths = []
  for i in range(num_shards):
    path = os.path.join(folder, tfrecord.shard_name("generated", i, num_shards))
    sl = slice(i * per_shard, (i + 1) * per_shard)
    tfrecord.write_shard(path, [tfrecord.serialize(x, y) for x, y in zip(images[sl],
                                                                          labels[sl])])
    paths.append(path)
  if metadata:
    with open(os.path.join(folder, "metadata.json"), "w") as f:
      json.dump({"shards": [writer.shard_entry(p, per_shard) for p in paths]}, f)
  return paths


def record_offsets(path):
  """Byte offset of each record (16 bytes of framing per record)."""
  offsets, at = [], 0
  for r in tf.data.TFRecordDataset(path).as_numpy_iterator():
    offsets.append(at)
    at += len(r) + 16
  return offsets


def corrupt_byte(path, offset):
  with open(path, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0xFF]))


def test_shards_that_are_fine_pass_and_metadata_records_sizes(tmp_path):
  paths = write_shards(str(tmp_path))
  shard_check.check_generated_shards(str(tmp_path / "*.tfrecord"), SHAPE, verify_checksums=True)
  meta = json.load(open(tmp_path / "metadata.json"))
  assert [e["bytes"] for e in meta["shards"]] == [os.path.getsize(p) for p in paths]


def test_glob_matching_nothing(tmp_path):
  with pytest.raises(DataError, match=r"'.*/nothing-\*\.tfrecord' matches no file"):
    shard_check.check_generated_shards(str(tmp_path / "nothing-*.tfrecord"), SHAPE)


def test_empty_shard(tmp_path):
  paths = write_shards(str(tmp_path), metadata=False)
  open(paths[1], "wb").close()
  pattern = str(tmp_path / "*.tfrecord")
  with pytest.raises(DataError, match=f"{paths[1]}: empty shard"):
    shard_check.check_generated_shards(pattern, SHAPE)
  # Recorded as empty in metadata.json (Beam's hash sharding can leave one so): fine, unless
  # every shard is.
  meta = {"shards": [writer.shard_entry(p, 0 if p == paths[1] else 8) for p in paths]}
  with open(tmp_path / "metadata.json", "w") as f:
    json.dump(meta, f)
  shard_check.check_generated_shards(pattern, SHAPE)
  with pytest.raises(DataError, match="every shard is empty"):
    shard_check.check_generated_shards(str(tmp_path / "generated-00001-*.tfrecord"), SHAPE)


def test_missing_and_truncated_shards_against_metadata(tmp_path):
  paths = write_shards(str(tmp_path))
  size = os.path.getsize(paths[2])
  with open(paths[2], "r+b") as f:
    f.truncate(size - 5)
  with pytest.raises(DataError, match=f"{paths[2]}: {size - 5} bytes, but .*metadata.json "
                     f"records {size}"):
    shard_check.check_generated_shards(str(tmp_path / "*.tfrecord"), SHAPE)
  os.remove(paths[2])
  with pytest.raises(DataError, match=f"{paths[2]}: listed in .*metadata.json but missing"):
    shard_check.check_generated_shards(str(tmp_path / "*.tfrecord"), SHAPE)
  # A glob selecting some shards only checks those.
  shard_check.check_generated_shards(str(tmp_path / "generated-0000[01]-*.tfrecord"), SHAPE)


def test_checksums_only_when_asked(tmp_path):
  paths = write_shards(str(tmp_path))
  corrupt_byte(paths[1], record_offsets(paths[1])[3] + 20)  # same size, other bytes
  pattern = str(tmp_path / "*.tfrecord")
  shard_check.check_generated_shards(pattern, SHAPE)  # the cheap check cannot see it
  with pytest.raises(DataError, match=f"{paths[1]}: sha256 differs"):
    shard_check.check_generated_shards(pattern, SHAPE, verify_checksums=True)


def test_wrong_image_shape(tmp_path):
  write_shards(str(tmp_path), size=16, metadata=False)
  with pytest.raises(DataError, match=r"generated-00000-of-00003.tfrecord: images of shape "
                     r"\(16, 16, 3\), but the real data's are \(32, 32, 3\)"):
    shard_check.check_generated_shards(str(tmp_path / "*.tfrecord"), SHAPE)


def test_read_errors_are_traced_to_their_shard_and_record(tmp_path):
  """What the training loop does with the reader's error: the shard, the record index and its
  byte offset, found by scanning this pipeline's shards."""
  paths = write_shards(str(tmp_path), metadata=False)
  pattern = str(tmp_path / "*.tfrecord")
  offsets = record_offsets(paths[1])
  corrupt_byte(paths[1], offsets[5] + 20)
  with pytest.raises(tf.errors.DataLossError) as read_error:
    for _ in tfrecord.read_examples(pattern, repeat=False):
      pass
  with pytest.raises(DataError, match=f"{paths[1]}: record 5 \\(byte offset {offsets[5]}\\) "
                     r"is truncated or corrupt \(corrupted record at \d+\)$"):
    shard_check.raise_for_read_error(read_error.value, pattern, SHAPE)
  # The shard is input pipeline 1's of 3: pipeline 0 does not blame its own.
  shard_check.raise_for_read_error(tf.errors.InvalidArgumentError(None, None, "x"), pattern,
                                   SHAPE, num_pipelines=3, pipeline_id=0)
  # A record of another image size in the middle of a shard.
  other = os.path.join(str(tmp_path), "odd", "generated-00000-of-00001.tfrecord")
  images, labels = make_images(4, size=32)
  records = [tfrecord.serialize(x, y) for x, y in zip(images, labels)]
  records[2] = tfrecord.serialize(make_images(1, size=16)[0][0], 1)
  os.makedirs(os.path.dirname(other))
  tfrecord.write_shard(other, records)
  at = sum(len(r) + 16 for r in records[:2])
  with pytest.raises(DataError, match=f"{other}: record 2 \\(byte offset {at}\\) has an image "
                     r"of shape \(16, 16, 3\)"):
    shard_check.raise_for_read_error(tf.errors.InvalidArgumentError(None, None, "shape"),
                                     other, SHAPE)


# The real entry point: a tiny mixed run (half generated), 2 steps.
BINDINGS = ["train_and_evaluate.num_steps=2", "train_and_evaluate.eval_every=0",
            "train_and_evaluate.image_summary_every=0", "train_and_evaluate.mixing_ratio=0.5",
            "Objective.attack_steps=1"]


def _train(model_dir, data_dir, pattern):
  cmd = [sys.executable, "-m", "rgd.train", "--gin_file=gin/debug.gin",
         f"--model_dir={model_dir}", f"--gin_bindings=DATASET='npz:{data_dir}'",
         f"--gin_bindings=train_and_evaluate.generated_pattern='{pattern}'"]
  cmd += [f"--gin_bindings={b}" for b in BINDINGS]
  return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def _outputs(model_dir):
  return sorted(os.path.relpath(os.path.join(d, f), model_dir)
                for d, _, files in os.walk(model_dir) for f in files)


@pytest.mark.parametrize("with_metadata", [True, False])
def test_truncated_shard_entry_point(tmp_path, with_metadata):
  """A truncated shard (a copy cut short). With metadata.json it is found before training; without,
  when the reader meets it: either way exit 2 naming the shard, and nothing written."""
  data_dir = write_npz_dataset(str(tmp_path / "data"))
  paths = write_shards(str(tmp_path / "gen"), metadata=with_metadata)
  offsets = record_offsets(paths[2])
  with open(paths[2], "r+b") as f:
    f.truncate(offsets[6] + 30)  # a partial copy: record 6 cut short
  model_dir = str(tmp_path / "run")
  result = _train(model_dir, data_dir, str(tmp_path / "gen" / "*.tfrecord"))
  assert result.returncode == 2, result.stderr[-3000:]
  if with_metadata:
    assert f"rgd.train: {paths[2]}: {offsets[6] + 30} bytes, but " in result.stderr
  else:
    assert (f"rgd.train: reading generated data '{tmp_path}/gen/*.tfrecord': {paths[2]}: "
            f"record 6 (byte offset {offsets[6]}) is truncated or corrupt") in result.stderr
  assert "Traceback" not in result.stderr
  # Nothing but the (empty) TensorBoard event files: no checkpoint, no export.
  assert not [f for f in _outputs(model_dir) if "tfevents" not in f], _outputs(model_dir)
