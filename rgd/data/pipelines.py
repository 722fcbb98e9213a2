"""Training and evaluation input as tf.data, from arrays in memory (rgd.data.registry loads them).

Images reach the model as float32 in [0, 1] (the training pipeline hands over uint8 when no
batch augmentation needs floats; the step converts); labels as float32 soft targets [b, K] (one-hot
for real data, smoothed for generated data) so that label smoothing and CutMix-style mixing share
one code path. Generated data (TFRecords, rgd.data.tfrecord) is mixed into every training batch in
an exact proportion.
"""
import numpy as np
import tensorflow as tf

from rgd.data import tfrecord
from rgd.data.augmentation import PAD, pad_crop_flip
from rgd.runtime import seeds
from rgd.errors import ConfigError

# Generated labels become 0.9 * onehot + 0.01 for 10 classes (docs/recipes.md "TRADES training").
GENERATED_LABEL_SMOOTHING = 0.1
# `generated_pattern` naming the class-conditional Gaussian sampled on the fly, fitted to the
# training images (rgd.datagen.gaussian_stream) instead of a glob of records.
GAUSSIAN = "gaussian"


def to_float(images):
  """uint8 [0, 255] -> float32 [0, 1]."""
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
                       generated_label_smoothing=GENERATED_LABEL_SMOOTHING, generated_fn=None,
                       flip=True, pad=PAD, pad_mode="constant"):
  """The training dataset of one input pipeline (one per worker host).

  Each element holds the batches of this pipeline's replicas stacked on a leading axis:
  dict(image [R, b, H, W, 3], label float32 [R, b, K], is_real bool [R, b]),
  where R = num_replicas / num_input_pipelines and b = global_batch_size / num_replicas. The
  training loop hands slice r to local replica r. The iterator of this plain `tf.data` dataset
  is checkpointed with the model, so a resumed run replays exactly the batches it would have
  seen.

  Without `generated_pattern` every example is real. With it, every *global* batch holds exactly
  round(mixing_ratio * B) real examples (seed 001's alpha): the count is split over input
  pipelines and then over local replicas, each filling up with generated examples. The
  generated examples come from the TFRecord shards the pattern globs, or from
  `generated_fn(batch_size, num_input_pipelines, input_pipeline_id)`, a dataset of batches
  dict(image uint8, label int) that the caller builds (the training loop passes the Gaussian
  sampled on the fly, rgd.datagen.gaussian_stream, for `generated_pattern=GAUSSIAN`; rgd.data
  does not import generators).

  `batch_augment_fn(batch, seed) -> batch` runs last, on each replica batch (CutMix etc.), on
  float32 images in [0, 1]. Without it images stay uint8 and the training step converts them
  on the device (`to_float`): a quarter of the bytes to move, and no host time spent on it.
  `flip=False` keeps the baseline's crop but never mirrors (DatasetSpec.flip of
  rgd.data.registry); `pad` and `pad_mode` choose the crop's padding (rgd.data.augmentation).
  """
  if global_batch_size % num_replicas:
    raise ConfigError(f"global batch {global_batch_size} is not divisible by {num_replicas} "
                     "replicas")
  local_replicas = num_replicas // num_input_pipelines
  per_replica = global_batch_size // num_replicas
  worker_batch = per_replica * local_replicas
  if generated_pattern:
    if not 0.0 <= mixing_ratio <= 1.0:
      raise ConfigError(f"mixing_ratio must be in [0, 1], got {mixing_ratio}")
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
    if generated_fn is not None:  # e.g. the Gaussian sampled on the fly (GAUSSIAN)
      gen = generated_fn(gen_worker, num_input_pipelines, input_pipeline_id)
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
      image = pad_crop_flip(image, seeds.key(seed, "crop", index), pad=pad, flip=flip,
                            pad_mode=pad_mode)
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
