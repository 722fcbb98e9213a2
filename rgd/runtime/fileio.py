"""File access for every path rgd reads or writes: local, `gs://`, `ram://`, through tf.io.gfile.

Atomic writes: the content goes to a temporary name in the same folder, then is renamed onto
the target (`tf.io.gfile.rename(..., overwrite=True)`), so an interrupted write (crash,
`kill -9`, preemption) never leaves a file that looks complete: the target keeps its previous
content or does not exist. What that guarantees where:

- Local disk (POSIX): rename is atomic. gfile has no fsync, so a power cut, unlike a crash, may
  leave an empty file on some filesystems.
- GCS: an object is replaced atomically: readers see the old or the new object, never a part.
  A rename is a server-side copy then a delete, so it is not atomic as a pair: a kill between
  them leaves the target complete and a stray `.tmp-*` object, which the next write ignores and
  `remove_stale_temporaries` deletes. Nothing spanning several objects (a folder, a checkpoint
  = index + data files) is atomic; tf.train.CheckpointManager writes the data files first and
  the small `checkpoint` index last, so an interrupted checkpoint is simply not listed.
- `ram://` (TF's in-memory filesystem, used by the tests): as local disk, in one process.
"""
import contextlib
import io
import json
import posixpath
import uuid

import numpy as np
import tensorflow as tf

gfile = tf.io.gfile


def is_remote(path):
  """True for `scheme://` paths (gs://, ram://, s3://, ...)."""
  return "://" in str(path)


def join(*parts):
  """os.path.join for any filesystem: gfile paths use '/'."""
  return posixpath.join(*[str(p) for p in parts])


def makedirs(path):
  gfile.makedirs(str(path))


@contextlib.contextmanager
def atomic_path(path, suffix=""):
  """Yields a temporary path next to `path`; renames it onto `path` when the block succeeds,
  removes it otherwise. `suffix` keeps tools that look at the extension (Keras) happy."""
  path = str(path)
  folder = posixpath.dirname(path) or "."
  gfile.makedirs(folder)
  tmp = join(folder, f".tmp-{uuid.uuid4().hex}{suffix}")
  try:
    yield tmp
    gfile.rename(tmp, path, overwrite=True)
  finally:
    if gfile.exists(tmp):
      gfile.remove(tmp)


def atomic_write_bytes(path, data):
  with atomic_path(path) as tmp, gfile.GFile(tmp, "wb") as f:
    f.write(data)


def atomic_write_text(path, text):
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_bytes(path):
  with gfile.GFile(str(path), "rb") as f:
    return f.read()


def read_json(path):
  return json.loads(read_bytes(path).decode("utf-8"))


def load_npz(path):
  """The arrays of an .npz as a dict, read through gfile and never unpickled."""
  with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def save_npz(path, **arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def remove_stale_temporaries(folder):
  """Deletes `.tmp-*` files an interrupted atomic write left in `folder`."""
  if not gfile.isdir(folder):
    return
  for name in gfile.listdir(folder):
    if name.startswith(".tmp-"):
      gfile.remove(join(folder, name))
