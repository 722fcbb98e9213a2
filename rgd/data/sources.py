"""Reading real data into memory: npz files and tfds data sets, checked on the way in.

Both readers return (images uint8 [N, H, W, 3], labels int64 [N]); CIFAR/SVHN-sized sets are a
few hundred MB as uint8, so they are held in memory and sliced there. Which data set a name means
(and its classes, size, statistics) is rgd.data.registry's; this module only reads.
"""
import io
import socket
import threading
import zipfile

import numpy as np
import tensorflow as tf

from rgd.errors import DataError
from rgd.runtime import fileio


def validate(images, labels, source, num_classes=None):
  """Raises a DataError naming `source` unless images are uint8 [N, H, W, 3] and labels ints
  [N] in [0, num_classes)."""
  if images.dtype != np.uint8:
    raise DataError(f"{source}: 'image' must be uint8 in [0, 255], got {images.dtype}")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise DataError(f"{source}: 'image' must have shape [N, H, W, 3], got {images.shape}")
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise DataError(f"{source}: 'label' must have shape [{images.shape[0]}] to match 'image', "
                    f"got {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{source}: 'label' must be integers, got {labels.dtype}")
  if images.shape[0] == 0:
    raise DataError(f"{source}: no images")
  if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
    bad = int(labels.min() if labels.min() < 0 else labels.max())
    raise DataError(f"{source}: label {bad} out of range [0, {num_classes})")


def load_npz(path, num_classes=None):
  """Reads `image`/`label` from an .npz without unpickling (allow_pickle=False)."""
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: file not found")
  try:
    # Through gfile (gs:// works), then parsed from memory; never unpickled.
    with np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False) as f:
      missing = [k for k in ("image", "label") if k not in f.files]
      if missing:
        raise DataError(f"{path}: missing key(s) {missing}; found {f.files}. Expected 'image' "
                        "uint8 [N, H, W, 3] and 'label' int [N]")
      images, labels = f["image"], f["label"]
  except DataError:
    raise
  except ValueError as e:  # e.g. an object array, which only unpickling could read
    raise DataError(f"{path}: cannot read as npz without pickle ({e})") from e
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"{path}: not a valid npz file (truncated or not npz; {e})") from e
  validate(images, labels, path, num_classes)
  return images, labels.astype(np.int64)


# Where tfds downloads CIFAR/SVHN from; probed before a download so that an offline machine gets
# the message at once instead of after tfds' retries (about 200 s).
TFDS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)
NETWORK_PROBE_TIMEOUT_S = 5.0


def network_reachable(address=None, timeout_s=None):
  """True if a TCP connection to `address` (default TFDS_DOWNLOAD_HOST) opens within
  `timeout_s`. Name resolution has no timeout of its own, so the probe runs in a daemon thread
  that is abandoned when late."""
  address = TFDS_DOWNLOAD_HOST if address is None else address
  timeout_s = NETWORK_PROBE_TIMEOUT_S if timeout_s is None else timeout_s
  result = []

  def probe():
    try:
      socket.create_connection(address, timeout=timeout_s).close()
      result.append(True)
    except OSError:
      pass
  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout_s)
  return bool(result)


def _tfds_unavailable(name, data_dir, reason):
  return DataError(
      f"tfds could not prepare {name!r} in {data_dir} ({reason}). "
      "Without network, either copy a prepared tfds directory and pass "
      "--gin_bindings=\"train_and_evaluate.data_dir='DIR'\", or write DIR/train.npz and "
      "DIR/test.npz (image uint8 [N,H,W,3], label int [N]) and use DATASET='npz:DIR'.")


def load_tfds(name, split, data_dir=None):
  """(images, labels) of tfds data set `name` (a config may follow: 'cifar10_corrupted/fog_1'),
  prepared in `data_dir` if it is not yet; a DataError saying what to do when it cannot be."""
  import tensorflow_datasets as tfds  # heavy import, only when a tfds set is used
  builder = tfds.builder(name, data_dir=data_dir)
  # tfds.testing.mock_data replaces download_and_prepare by a no-op: nothing to download then.
  mocked = getattr(type(builder).download_and_prepare, "__name__", "").startswith("mock_")
  if not (builder.is_prepared() or mocked or network_reachable()):
    raise _tfds_unavailable(name, builder.data_dir, "not prepared there, and no network to "
                            f"download it: {TFDS_DOWNLOAD_HOST[0]} is unreachable")
  try:
    builder.download_and_prepare()
  except Exception as e:  # tfds raises many types when offline; all mean "not available".
    raise _tfds_unavailable(name, builder.data_dir, f"{type(e).__name__}: {e}") from e
  # Batches of 10k, not batch_size=-1: the latter needs a known cardinality (and crashes on
  # tfds' mock data).
  images, labels = [], []
  for x, y in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(10_000)):
    images.append(x)
    labels.append(y)
  if not images:
    raise DataError(f"tfds:{name}/{split} is empty")
  return np.concatenate(images), np.concatenate(labels).astype(np.int64)
