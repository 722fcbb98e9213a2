"""Content digests of files on any filesystem (through tf.io.gfile).

One sha256 for every file rgd pins by content: the shards and labeller of a generated set
(rgd.datagen, recorded in metadata.json) and the check of those shards before training
(rgd.data.shard_check). It lives in runtime, under both, so that neither imports the other.
"""
import hashlib

from rgd.runtime import fileio


def sha256_file(path, chunk=1 << 20):
  """Hex sha256 of the file at `path` (local, gs://, ram://), read `chunk` bytes at a time."""
  h = hashlib.sha256()
  with fileio.gfile.GFile(str(path), "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
