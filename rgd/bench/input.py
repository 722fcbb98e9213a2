"""Input-pipeline benchmark: images/s of rgd.data.datasets.make_train_dataset per augmentation.

  python tools/benchmark.py input                        # synthetic real + temporary TFRecords
  python tools/benchmark.py input --dataset=npz:DIR --generated='/data/ddpm/train-*.tfrecord'
  python tools/benchmark.py input --augmentations=none,cutmix --batch_size=512 --num_batches=20

Without --generated, generated images are written to temporary TFRecord shards (rgd.data.tfrecord)
and deleted afterwards. Each row times `num_batches` global batches after `warmup` batches:

  pipeline   the whole make_train_dataset (real + generated, pad-crop-flip, the augmentation)
  op alone   the augmentation alone on one float batch inside a tf.function (the cost the hook
             adds per image)

A breakdown of the baseline (real only / generated only, with and without pad-crop-flip) shows
where the time goes. Numbers depend on how many cores tf.data gets: state them with the figure.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from rgd import augment
from rgd.data import datasets
from rgd.data import tfrecord


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py input", description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="synthetic",
                 help="'synthetic' (random uint8 images), a tfds name or npz:DIR")
  p.add_argument("--generated", default=None, help="glob of generated TFRecord shards")
  p.add_argument("--num_synthetic", type=int, default=20_000,
                 help="synthetic real images, and generated images written when --generated "
                      "is not given")
  p.add_argument("--batch_size", type=int, default=1024)
  p.add_argument("--num_replicas", type=int, default=1)
  p.add_argument("--mixing_ratio", type=float, default=0.3)
  p.add_argument("--num_batches", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=2,
                 help="time each row this many times and report the fastest (other processes "
                      "on a shared host only ever slow a run down)")
  p.add_argument("--augmentations", default=",".join(["none"] + list(augment.AUGMENTATIONS)))
  p.add_argument("--no_breakdown", action="store_true", help="skip the baseline breakdown")
  return p.parse_args(argv)


def _synthetic(n, num_classes=10, size=32, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.randint(0, 256, (n, size, size, 3), dtype=np.uint8),
          rng.randint(0, num_classes, n).astype(np.int64))


def write_temporary_records(folder, n, num_shards=4, seed=1):
  """n random images in `num_shards` shards under `folder`; returns the glob pattern."""
  images, labels = _synthetic(n, seed=seed)
  prefix = os.path.join(folder, "generated")
  for i, part in enumerate(np.array_split(np.arange(n), num_shards)):
    tfrecord.write_shard(tfrecord.shard_name(prefix, i, num_shards),
                         (tfrecord.serialize(images[j], labels[j]) for j in part))
  return prefix + "-*.tfrecord"


def time_dataset(ds, batch_size, num_batches, warmup, repeats=1):
  """Images per second over `num_batches` elements after `warmup` elements (best of
  `repeats` runs on one iterator)."""
  it = iter(ds)
  return max(_time_iterator(it, batch_size, num_batches, warmup) for _ in range(repeats))


def _time_iterator(it, batch_size, num_batches, warmup):
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(it)
  # Elements are produced asynchronously; touching the last one waits for it.
  tf.nest.map_structure(lambda t: t.numpy(), batch)
  return num_batches * batch_size / (time.perf_counter() - start)


def time_op(fn, batch, num_batches, warmup, repeats=1):
  """Images per second of `fn(batch, seed)` alone, in a tf.function (best of `repeats`)."""
  step = tf.function(lambda b, i: fn(b, tf.stack([0, i])))
  for i in range(warmup):
    step(batch, tf.constant(i))["image"].numpy()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(num_batches):
      out = step(batch, tf.constant(i))
    out["image"].numpy()
    rates.append(num_batches * int(batch["image"].shape[0]) / (time.perf_counter() - start))
  return max(rates)


def main(argv):
  args = parse_args(argv)
  names = [n.strip() for n in args.augmentations.split(",") if n.strip()]
  fns = {name: augment.make_batch_augment(name) for name in names}  # fails early on a bad name
  if args.dataset == "synthetic":
    images, labels = _synthetic(args.num_synthetic)
    num_classes = 10
  else:
    images, labels = datasets.load_split(args.dataset, "train")
    num_classes = datasets.num_classes_of(args.dataset)

  tmp = None
  pattern = args.generated
  if pattern is None and args.mixing_ratio < 1.0:
    tmp = tempfile.mkdtemp(prefix="rgd-bench-input-")  # local only: benchmark scratch
    pattern = write_temporary_records(tmp, args.num_synthetic)
  try:
    def pipeline(batch_augment_fn=None, generated=pattern, pad_crop_flip=True, ratio=None):
      return datasets.make_train_dataset(
          images, labels, num_classes, args.batch_size, num_replicas=args.num_replicas,
          generated_pattern=generated,
          mixing_ratio=args.mixing_ratio if ratio is None else ratio,
          seed=0, augment=pad_crop_flip, batch_augment_fn=batch_augment_fn)

    per_replica = args.batch_size // args.num_replicas
    sample = {"image": datasets.to_float(images[:per_replica]),
              "label": datasets.soft_labels(labels[:per_replica], num_classes),
              "is_real": tf.ones([per_replica], tf.bool)}
    print(f"tf.data on {os.cpu_count()} CPU cores; global batch {args.batch_size} "
          f"({args.num_replicas} replica(s)), real fraction "
          f"{args.mixing_ratio if pattern else 1.0}, {args.num_batches} timed batches, best of "
          f"{args.repeats}")
    print(f"{'augmentation':<22}{'pipeline img/s':>16}{'op alone img/s':>16}")
    for name in names:
      fn = fns[name]
      timing = (args.num_batches, args.warmup, args.repeats)
      rate = time_dataset(pipeline(fn), args.batch_size, *timing)
      alone = time_op(fn, sample, *timing) if fn is not None else None
      alone_text = f"{alone:>16,.0f}" if alone is not None else f"{'-':>16}"
      print(f"{name:<22}{rate:>16,.0f}{alone_text}", flush=True)

    if not args.no_breakdown:
      print("\nBaseline breakdown (no batch augmentation):")
      rows = [("real only, no crop", dict(generated=None, pad_crop_flip=False)),
              ("real only, pad-crop-flip", dict(generated=None))]
      if pattern:
        rows += [("generated only, no crop", dict(pad_crop_flip=False, ratio=0.0)),
                 ("generated only, pad-crop-flip", dict(ratio=0.0)),
                 ("mixed, no crop", dict(pad_crop_flip=False))]
      for label, kwargs in rows:
        rate = time_dataset(pipeline(**kwargs), args.batch_size, args.num_batches, args.warmup,
                            args.repeats)
        print(f"{label:<32}{rate:>16,.0f}", flush=True)
      crop = lambda b, s: dict(b, image=datasets.pad_crop_flip(b["image"], s))
      uint8 = dict(sample, image=tf.constant(images[:per_replica]))
      print(f"{'pad_crop_flip op alone (uint8)':<32}"
            f"{time_op(crop, uint8, args.num_batches, args.warmup, args.repeats):>16,.0f}")
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)  # local only: benchmark scratch
  return 0
