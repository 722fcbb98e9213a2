"""Atomic file writes: write under a temporary name in the same folder, then rename.

An interrupted write (crash, `kill -9`) therefore never leaves a file that looks complete: the
target either keeps its previous content or does not exist.
"""
import contextlib
import os
import tempfile


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path, suffix=""):
  """Yields a temporary path next to `path`; renames it onto `path` when the block succeeds,
  removes it otherwise. `suffix` keeps tools that look at the extension (Keras) happy."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
  os.close(fd)
  try:
    yield tmp
    # On disk before the rename, so a power cut cannot leave a renamed but empty file.
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    # mkstemp makes private (0600) files; a finished file gets the usual permissions.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write_bytes(path, data):
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)


def atomic_write_text(path, text):
  atomic_write_bytes(path, text.encode("utf-8"))
