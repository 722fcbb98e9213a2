"""Generated-data records benchmark: records written/s and read/s through the training reader.

  python tools/benchmark.py records
  python tools/benchmark.py records --num_records=50000 --num_shards=16 --batch_size=1024

Writes `num_records` random 32x32 images as TFRecord shards the way tools/make_tfrecords.py does
(rgd.datagen.writer: serialize, atomic shard, checksum), then reads them back with
rgd.data.datasets.make_train_dataset (generated only, mixing_ratio=0) as training would:

  write            serialize + write shards (what make_tfrecords does after labelling)
  sha256           checksumming the shards (metadata.json)
  read (parse)     the reader without augmentation: files, shuffle buffer, parse, to float
  read (training)  the same with pad-crop-flip, i.e. the training input of generated data

Reading must not limit training: compare `read (training)` with the generated share (70%) of a
training step's images/s. Numbers depend on the cores tf.data gets; state them with the figure.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from rgd.data import datasets
from rgd.datagen import writer
from rgd.runtime import digest


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py records", description=__doc__.split("\n")[0])
  p.add_argument("--num_records", "--num_images", dest="num_records", type=int, default=20_000)
  p.add_argument("--num_shards", type=int, default=8)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=1024)
  p.add_argument("--num_batches", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=2, help="time each reader this many times and "
                 "report the fastest (other processes on a shared host only slow a run down)")
  p.add_argument("--dir", default=None, help="where to write (default: a temporary folder, "
                 "deleted afterwards)")
  return p.parse_args(argv)


class _Memory:
  """An in-memory source for writer.write_shards."""

  def __init__(self, images):
    self.images = images

  def take(self, indices):
    return self.images[indices]


def _time_reader(pattern, batch_size, num_batches, warmup, augment):
  x, y = np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64)
  ds = datasets.make_train_dataset(x, y, 10, batch_size, generated_pattern=pattern,
                               mixing_ratio=0.0, augment=augment)
  it = iter(ds)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(it)
  batch["image"].numpy()
  return num_batches * batch_size / (time.perf_counter() - start)


def main(argv):
  args = parse_args(argv)
  folder = args.dir or tempfile.mkdtemp(prefix="rgd_records_")  # local only: benchmark scratch
  os.makedirs(folder, exist_ok=True)  # local only: benchmark scratch
  try:
    rng = np.random.default_rng(0)
    n, s = args.num_records, args.image_size
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    plan = writer.make_plan(np.arange(n), rng.integers(0, 10, n), np.zeros(n), seed=0)
    per_shard = -(-n // args.num_shards)

    start = time.perf_counter()
    names = writer.write_shards(_Memory(images), plan, folder, per_shard)
    write_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for name in names:
      digest.sha256_file(os.path.join(folder, name))
    sha_rate = n / (time.perf_counter() - start)
    pattern = os.path.join(folder, f"{writer.DEFAULT_PREFIX}-*.tfrecord")
    parse_rate, train_rate = (
        max(_time_reader(pattern, args.batch_size, args.num_batches, args.warmup, augment)
            for _ in range(args.repeats)) for augment in (False, True))
    mb = sum(os.path.getsize(os.path.join(folder, x)) for x in names) / 2**20  # local only: benchmark scratch
    print(f"{n} records of {s}x{s}x3 in {len(names)} shards ({mb:.1f} MiB), "
          f"{os.cpu_count()} CPUs, batch {args.batch_size}")
    for label, rate in (("write", write_rate), ("sha256", sha_rate),
                        ("read (parse)", parse_rate), ("read (training)", train_rate)):
      print(f"  {label:<16} {rate:10.0f} records/s")
  finally:
    if not args.dir:
      shutil.rmtree(folder, ignore_errors=True)  # local only: benchmark scratch


if __name__ == "__main__":
  import sys
  main(sys.argv[1:])
