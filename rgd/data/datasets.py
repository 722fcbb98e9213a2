"""Input pipelines: real data (tfds or npz) and generated data (TFRecords), mixed per batch.

A data set is named by one string (gin macro `DATASET`):
  * a tfds name: `cifar10`, `cifar100`, `svhn_cropped`;
  * `digits`: scikit-learn's handwritten digits, built in, no download (rgd.data.digits);
  * `npz:DIR`: DIR holds `train.npz` and `test.npz`, each with `image` uint8 [N, H, W, 3] and
    `label` int [N] (the layout generated sets use, docs/recipes.md "Generated data").

Images reach the model as float32 in [0, 1] (the training pipeline hands over uint8 when no
batch augmentation needs floats; the step converts); labels as float32 soft targets [b, K] (one-hot
for real data, smoothed for generated data) so that label smoothing and CutMix-style mixing share
one code path. The last `num_validation` (1024) training images are held out as the validation
set (the seed protocol, docs/recipes.md "Validation").
"""
import io
import os
import socket
import threading
import zipfile

import numpy as np
import tensorflow as tf

from rgd.runtime import seeds
from rgd.errors import DataError
from rgd.runtime import fileio
from rgd.data import digits, tfrecord

TFDS_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn_cropped": 10}
NUM_VALIDATION = 1024  # docs/recipes.md "Validation": 1024 held-out training images.
# Generated labels become 0.9 * onehot + 0.01 for 10 classes (docs/recipes.md "TRADES training").
GENERATED_LABEL_SMOOTHING = 0.1
PAD = 4  # Pad-4-crop (He et al. 2016; all seeds).
# `generated_pattern` naming the class-conditional Gaussian sampled on the fly, fitted to the
# training images (rgd.datagen.gaussian_stream) instead of a glob of records.
GAUSSIAN = "gaussian"


# ----------------------------------------------------------------------------------------------
# Loading real data into memory (CIFAR/SVHN-sized sets are a few hundred MB as uint8).


def _validate(images, labels, source, num_classes=None):
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
  _validate(images, labels, path, num_classes)
  return images, labels.astype(np.int64)


# Where tfds downloads CIFAR/SVHN from; probed before a download so that an offline machine gets
# the message at once instead of after tfds' retries (about 200 s).
TFDS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)
NETWORK_PROBE_TIMEOUT_S = 5.0


def _network_reachable(address=TFDS_DOWNLOAD_HOST, timeout_s=NETWORK_PROBE_TIMEOUT_S):
  """True if a TCP connection to `address` opens within `timeout_s`. Name resolution has no
  timeout of its own, so the probe runs in a daemon thread that is abandoned when late."""
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


def _load_tfds(name, split, data_dir):
  import tensorflow_datasets as tfds  # heavy import, only when a tfds set is used
  builder = tfds.builder(name, data_dir=data_dir)
  # tfds.testing.mock_data replaces download_and_prepare by a no-op: nothing to download then.
  mocked = getattr(type(builder).download_and_prepare, "__name__", "").startswith("mock_")
  if not (builder.is_prepared() or mocked or _network_reachable()):
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


def num_classes_of(dataset, num_classes=None):
  if num_classes:
    return int(num_classes)
  if dataset in TFDS_NUM_CLASSES:
    return TFDS_NUM_CLASSES[dataset]
  if dataset == digits.NAME:
    return digits.NUM_CLASSES
  if dataset.startswith("npz:"):
    _, labels = load_npz(os.path.join(dataset[4:], "train.npz"))
    return int(labels.max()) + 1
  raise DataError(f"Unknown number of classes for {dataset!r}: set NUM_CLASSES")


def load_split(dataset, split, num_classes=None, num_validation=NUM_VALIDATION, data_dir=None):
  """Returns (images uint8 [N,H,W,3], labels int64 [N]) of `split`.

  Splits: `train` (without the held-out images), `validation` (the last `num_validation`
  training images), `train_full` and `test`.
  """
  if split not in ("train", "validation", "train_full", "test"):
    raise ValueError(f"Unknown split {split!r}")
  source_split = "test" if split == "test" else "train"
  if dataset.startswith("npz:"):
    images, labels = load_npz(os.path.join(dataset[4:], f"{source_split}.npz"), num_classes)
  elif dataset in TFDS_NUM_CLASSES:
    images, labels = _load_tfds(dataset, source_split, data_dir)
    _validate(images, labels, f"tfds:{dataset}/{source_split}", num_classes)
  elif dataset == digits.NAME:  # built in, no download (rgd.data.digits)
    images, labels = digits.load(source_split)
  else:
    raise DataError(f"Unknown dataset {dataset!r}: use one of {sorted(TFDS_NUM_CLASSES)}, "
                    f"'{digits.NAME}' or 'npz:DIR'")
  if split in ("train", "validation"):
    if num_validation >= len(images):
      raise DataError(f"{dataset}: cannot hold out {num_validation} of {len(images)} images")
    cut = len(images) - num_validation
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    images, labels = images[sl], labels[sl]
  return images, labels


# ----------------------------------------------------------------------------------------------
# Augmentation on whole batches: one vectorised gather is far faster than a per-image map.


def pad_crop_flip(images, seed, pad=PAD):
  """Random crop after zero padding by `pad`, and a random horizontal flip, per example.

  `images` [b, H, W, C] (any dtype); `seed` int32 [2]. Stateless, so a resumed input pipeline
  replays the same augmentation.
  """
  b = tf.shape(images)[0]
  h, w = images.shape[1], images.shape[2]
  keys = tf.random.experimental.stateless_split(seed, 3)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  dy = tf.random.stateless_uniform([b], keys[0], 0, 2 * pad + 1, dtype=tf.int32)
  dx = tf.random.stateless_uniform([b], keys[1], 0, 2 * pad + 1, dtype=tf.int32)
  rows = dy[:, None] + tf.range(h)[None]
  cols = dx[:, None] + tf.range(w)[None]
  flip = tf.random.stateless_uniform([b], keys[2]) < 0.5
  cols = tf.where(flip[:, None], tf.reverse(cols, [1]), cols)
  out = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(out, cols, axis=2, batch_dims=1)


def to_float(images):
  return tf.cast(images, tf.float32) / 255.0


def soft_labels(labels, num_classes, smoothing=0.0):
  """(1 - s) * onehot + s / K."""
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
  return one_hot * (1.0 - smoothing) + smoothing / num_classes


# ----------------------------------------------------------------------------------------------
# Training input: one plain tf.data pipeline per worker host, checkpointable with the model.


def split_counts(total, parts):
  """Splits `total` into `parts` integers differing by at most one (the first get the extra)."""
  base, extra = divmod(total, parts)
  return [base + (i < extra) for i in range(parts)]


def num_real_per_batch(global_batch, mixing_ratio):
  """Real examples in each global batch: round(mixing_ratio * B) (seed 001, alpha)."""
  return int(round(mixing_ratio * global_batch))


def make_train_dataset(images, labels, num_classes, global_batch_size, num_replicas=1,
                       num_input_pipelines=1, input_pipeline_id=0, generated_pattern=None,
                       mixing_ratio=0.3, seed=0, augment=True, batch_augment_fn=None,
                       generated_shuffle_buffer=10_000,
                       generated_label_smoothing=GENERATED_LABEL_SMOOTHING):
  """The training dataset of one input pipeline (one per worker host).

  Each element holds the batches of this pipeline's replicas stacked on a leading axis:
  dict(image [R, b, H, W, 3], label float32 [R, b, K], is_real bool [R, b]),
  where R = num_replicas / num_input_pipelines and b = global_batch_size / num_replicas. The
  training loop hands slice r to local replica r. The iterator of this plain `tf.data` dataset
  is checkpointed with the model, so a resumed run replays exactly the batches it would have
  seen.

  Without `generated_pattern` every example is real. `generated_pattern='gaussian'` samples the
  class-conditional Gaussian fitted to (images, labels) on the fly. With either, every *global*
  batch holds exactly round(mixing_ratio * B) real examples (seed 001's alpha): the count is
  split over input pipelines and then over local replicas, each filling up with generated
  examples.

  `batch_augment_fn(batch, seed) -> batch` runs last, on each replica batch (CutMix etc.), on
  float32 images in [0, 1]. Without it images stay uint8 and the training step converts them
  on the device (`to_float`): a quarter of the bytes to move, and no host time spent on it.
  """
  if global_batch_size % num_replicas:
    raise ValueError(f"global batch {global_batch_size} is not divisible by {num_replicas} "
                     "replicas")
  local_replicas = num_replicas // num_input_pipelines
  per_replica = global_batch_size // num_replicas
  worker_batch = per_replica * local_replicas
  if generated_pattern:
    if not 0.0 <= mixing_ratio <= 1.0:
      raise ValueError(f"mixing_ratio must be in [0, 1], got {mixing_ratio}")
    real_worker = split_counts(num_real_per_batch(global_batch_size, mixing_ratio),
                               num_input_pipelines)[input_pipeline_id]
  else:
    real_worker = worker_batch
  gen_worker = worker_batch - real_worker
  seed = int(seed)

  parts = []
  if real_worker:
    n = len(images)
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    # Shuffle indices, not images: the shuffle buffer (saved in the iterator checkpoint) then
    # holds int64s instead of the whole training set.
    idx = tf.data.Dataset.range(n).shard(num_input_pipelines, input_pipeline_id)
    idx = idx.shuffle(n // num_input_pipelines + 1, seed=seeds.shuffle_seed(seed, "real_order"),
                      reshuffle_each_iteration=True).repeat()
    real = idx.batch(real_worker, drop_remainder=True).map(
        lambda i: (tf.gather(images_t, i),
                   soft_labels(tf.gather(labels_t, i), num_classes),
                   tf.ones_like(i, tf.bool)))
    parts.append(real)
  if gen_worker:
    if generated_pattern == GAUSSIAN:  # sampled on the fly (rgd.datagen.gaussian_stream)
      from rgd.datagen import gaussian_stream  # pylint: disable=g-import-not-at-top
      gen = gaussian_stream.examples(images, labels, num_classes, gen_worker, seed,
                                     num_input_pipelines, input_pipeline_id)
    else:
      gen = tfrecord.read_examples(generated_pattern, generated_shuffle_buffer,
                                   seeds.shuffle_seed(seed, "generated_shards"),
                                   num_input_pipelines, input_pipeline_id)
      gen = gen.batch(gen_worker, drop_remainder=True).map(tfrecord.parse_batch)
    # Generated images must have the real images' shape (they share batches); ensure_shape
    # also gives the static shape the batch augmentations need.
    image_shape = [gen_worker] + list(images.shape[1:])
    gen = gen.map(lambda ex: (tf.ensure_shape(ex["image"], image_shape),
                              soft_labels(ex["label"], num_classes, generated_label_smoothing),
                              tf.zeros_like(ex["label"], tf.bool)))
    parts.append(gen)
  ds = parts[0] if len(parts) == 1 else tf.data.Dataset.zip(tuple(parts)).map(
      lambda r, g: tuple(tf.concat([a, b], 0) for a, b in zip(r, g)))

  def finish(index, batch):
    image, label, is_real = batch
    index = tf.cast(index, tf.int32)
    if augment:
      image = pad_crop_flip(image, seeds.key(seed, "crop", index))
    if batch_augment_fn is not None:
      image = to_float(image)
    replicas = _split_for_replicas((image, label, is_real), real_worker, local_replicas,
                                   per_replica)
    out = []
    for r, (image, label, is_real) in enumerate(replicas):
      b = {"image": image, "label": label, "is_real": is_real}
      if batch_augment_fn is not None:
        b = batch_augment_fn(b, seeds.key(seed, "augment", index, sub=r))
      out.append(b)
    return tf.nest.map_structure(lambda *t: tf.stack(t), *out)

  ds = ds.enumerate().map(finish, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _split_for_replicas(batch, num_real, replicas, per_replica):
  """Worker batch -> one batch per replica: each replica gets its share of the real examples
  (split_counts) and fills up with generated ones."""
  real_counts = split_counts(num_real, replicas)
  out = []
  real_start, gen_start = 0, num_real
  for r in range(replicas):
    nr, ng = real_counts[r], per_replica - real_counts[r]
    out.append(tuple(tf.concat([t[real_start:real_start + nr], t[gen_start:gen_start + ng]], 0)
                     for t in batch))
    real_start += nr
    gen_start += ng
  return out


def make_eval_dataset(images, labels, batch_size, input_context=None):
  """Evaluation batches dict(image, label int64, mask) padded to full batches (static shapes
  for TPU and XLA); `mask` is False on padding. Split between input pipelines if given."""
  n = len(images)
  pad = (-n) % batch_size
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
  mask = np.arange(n + pad) < n
  ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "mask": mask})
  if input_context is not None:
    per_replica = input_context.get_per_replica_batch_size(batch_size)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  else:
    ds = ds.batch(batch_size, drop_remainder=True)
  return ds.map(lambda b: dict(b, image=to_float(b["image"]))).prefetch(tf.data.AUTOTUNE)
