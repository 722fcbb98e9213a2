"""The TFRecord schema of generated (pseudo-labelled) data sets, and its reader and writer.

One `tf.train.Example` per image:
  image       bytes    raw uint8 pixels, row-major H x W x C (no PNG: decoding is the bottleneck
                       of a 1M-image input pipeline, raw bytes are a reshape)
  shape       int64[3] (H, W, C)
  label       int64    pseudo-label in [0, num_classes)
  confidence  float    optional: the labeller's softmax probability of `label` (-1 if unknown)

Shards are named `PREFIX-00000-of-00010.tfrecord` and found by glob. `tools/make_tfrecords.py`
writes them; `rgd.data.datasets` reads them during training.
"""

import numpy as np
import tensorflow as tf

from rgd.runtime import fileio
from rgd.errors import DataError

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "shape": tf.io.FixedLenFeature([3], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "confidence": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
}


def serialize(image, label, confidence=None):
  """One example as bytes. `image` uint8 [H, W, C]."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise DataError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
      "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape))),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  }
  if confidence is not None:
    feature["confidence"] = tf.train.Feature(
        float_list=tf.train.FloatList(value=[float(confidence)]))
  # deterministic=True sorts the feature map: the same example gives the same bytes in every
  # process, so shard checksums (metadata.json) are reproducible.
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def parse_batch(serialized):
  """Parses a batch of serialized examples -> dict(image uint8 [n,H,W,C], label, confidence).

  All images of a batch must have one shape (one generated set has one resolution); this is
  checked, so a stray record of another size fails loudly instead of being reshaped wrongly.
  """
  ex = tf.io.parse_example(serialized, FEATURES)
  shape = tf.cast(ex["shape"], tf.int32)
  tf.debugging.assert_equal(shape, tf.broadcast_to(shape[:1], tf.shape(shape)),
                            message="generated records of different image shapes in one batch")
  pixels = tf.io.decode_raw(ex["image"], tf.uint8)
  images = tf.reshape(pixels, tf.concat([tf.shape(serialized)[:1], shape[0]], 0))
  return {"image": images, "label": ex["label"], "confidence": ex["confidence"]}


def list_shards(pattern):
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"No generated TFRecord shards match {pattern!r}")
  return files


def shard_name(prefix, index, num_shards):
  return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def write_shard(path, serialized_examples):
  """Writes records to `path` atomically: a temp file in the same folder, then a rename, so an
  interrupted write never leaves a complete-looking shard."""
  count = 0
  with fileio.atomic_path(path, suffix=".tfrecord") as tmp:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in serialized_examples:
        writer.write(record)
        count += 1
  return count


def read_examples(pattern, shuffle_buffer=10_000, seed=0, num_shards=1, shard_index=0,
                  repeat=True):
  """Dataset of serialized examples from the shards matching `pattern`: files shuffled each
  pass, read interleaved (deterministically, so a resume replays the same order), then shuffled
  with a buffer. `num_shards/shard_index` split the files between input pipelines."""
  files = list_shards(pattern)
  ds = tf.data.Dataset.from_tensor_slices(files)
  if num_shards > 1:
    if len(files) < num_shards:
      raise DataError(f"{len(files)} shards in {pattern!r} cannot feed {num_shards} input "
                       "pipelines; write at least one shard per pipeline")
    ds = ds.shard(num_shards, shard_index)
  if repeat:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shuffle_buffer and repeat:
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  return ds
