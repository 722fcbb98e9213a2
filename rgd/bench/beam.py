"""Generated sets on Apache Beam: records/s of tools/make_tfrecords.py, single process vs Beam.

  python tools/benchmark.py beam
  python tools/benchmark.py beam --num_images=100000 --workers=1,2 --keep_per_class=5000

Writes `num_images` random 32x32 images as `num_files` .npy files, saves a tiny Keras labeller
(one 3x3 conv of 4 channels, global pooling, dense: the pipeline's own cost, not a classifier's),
then runs the whole job (list, label, keep the top k per class, write shards, metadata.json)
once in one process (rgd.datagen.pipeline) and once per entry of --workers on Beam's
DirectRunner with that many worker processes (`--direct_running_mode=multi_processing`).
images/s = images labelled / wall seconds of the job, start-up included (Beam's start-up is
~5-10 s of a run here: compare runs of the same size); images/CPU-s = the same per second of
CPU used by the job and its worker processes, which holds on a shared host where wall time
does not. With a real labeller (seed 001: WRN-28-10,
1.05e10 FLOPs an image) labelling dominates; time it with `tools/benchmark.py eval`.
"""
import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np

from rgd.bench import flops as flops_lib


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py beam", description=__doc__.split("\n")[0])
  p.add_argument("--num_images", type=int, default=100_000)
  p.add_argument("--num_files", type=int, default=10)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--workers", default="1,2", help="comma-separated DirectRunner process counts")
  p.add_argument("--keep_per_class", type=int, default=5000, help="0: keep all")
  p.add_argument("--examples_per_shard", type=int, default=10_000)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--single", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the single-process path")
  p.add_argument("--time_labeller", default=None, help="also time labelling alone with this "
                 "rgd model (e.g. wrn-28-10, seed 001's labeller), untrained: the cost does not "
                 "depend on the weights")
  p.add_argument("--labeller_images", type=int, default=128)
  p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, "
                 "deleted afterwards)")
  return p.parse_args(argv)


def _tiny_labeller(path, size):
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((size, size, 3))
  h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
  out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
  model = keras.Model(inputs, out, name="tiny")
  model.save(path)
  return model


def _cpu_seconds():
  """User + system CPU of this process and its finished children (Beam's worker processes)."""
  return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
             for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _time_labeller(name, num_images, batch_size, size):
  """Labelling alone (rgd.datagen.labeling.Labeler) with an rgd model: images/s, GFLOP/s."""
  from rgd import models  # pylint: disable=g-import-not-at-top
  from rgd.datagen import labeling  # pylint: disable=g-import-not-at-top
  model = models.get_model(name, input_shape=(size, size, 3))
  labeler = labeling.Labeler(model)
  batch = min(batch_size, num_images)
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  labeler(images)  # Trace.
  start, cpu = time.perf_counter(), _cpu_seconds()
  done = 0
  while done < num_images:
    labeler(images)
    done += batch
  wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  gflops = flops_lib.forward_flops(model, (size, size, 3)) / 1e9
  print(f"  labeller {name} ({gflops:.2f} GFLOPs an image), batch {batch}: {done / wall:.1f} "
        f"images/s, {done / cpu:.1f} images/CPU-s, {done * gflops / wall:.1f} GFLOP/s")


def main(argv):
  args = parse_args(argv)
  # Imported here: `tools/benchmark.py --help` works without apache-beam.
  # pylint: disable=g-import-not-at-top
  from rgd.datagen import generators, labeling, pipeline
  folder = args.dir or tempfile.mkdtemp(prefix="rgd_beam_")  # local only: benchmark scratch
  os.makedirs(folder, exist_ok=True)  # local only: benchmark scratch
  try:
    rng = np.random.default_rng(0)
    n, s = args.num_images, args.image_size
    inputs = os.path.join(folder, "in")
    os.makedirs(inputs, exist_ok=True)  # local only: benchmark scratch
    bounds = np.linspace(0, n, args.num_files + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
      np.save(os.path.join(inputs, f"{i:04d}.npy"),
              rng.integers(0, 256, (b - a, s, s, 3), dtype=np.uint8))
    model = _tiny_labeller(os.path.join(folder, "tiny.keras"), s)
    labeler = labeling.Labeler.load(os.path.join(folder, "tiny.keras"))
    gflops = flops_lib.forward_flops(model, (s, s, 3)) / 1e9
    keep = args.keep_per_class or None
    kw = dict(labeler=labeler, keep_per_class=keep, examples_per_shard=args.examples_per_shard,
              batch_size=args.batch_size)
    images = generators.make(f"files:{inputs}")
    rows = []
    if args.single:
      start, cpu = time.perf_counter(), _cpu_seconds()
      meta = pipeline.make_tfrecords(os.path.join(folder, "single"), images, **kw)
      rows.append(("single process", time.perf_counter() - start, _cpu_seconds() - cpu,
                   meta["num_examples"]))
    for w in [int(x) for x in args.workers.split(",") if x]:
      options = [f"--direct_num_workers={w}", "--direct_running_mode=multi_processing"]
      start, cpu = time.perf_counter(), _cpu_seconds()
      meta = pipeline.make_tfrecords(os.path.join(folder, f"beam{w}"), images,
                                     runner="DirectRunner", beam_options=options, **kw)
      rows.append((f"Beam DirectRunner x{w}", time.perf_counter() - start,
                   _cpu_seconds() - cpu, meta["num_examples"]))
    print(f"{n} images {s}x{s}x3 in {args.num_files} .npy files, labeller {gflops:.4f} GFLOPs "
          f"an image, keep {keep or 'all'} per class, {os.cpu_count()} CPUs")
    print(f"  {'':<22} {'wall':>7}  {'images/s':>8}  {'CPU':>7}  {'images/CPU-s':>12}  written")
    for name, seconds, cpu, written in rows:
      print(f"  {name:<22} {seconds:6.1f}s  {n / seconds:8.0f}  {cpu:6.1f}s  {n / cpu:12.0f}  "
            f"{written}")
    print(f"  (load average over the last minute: {os.getloadavg()[0]:.1f})")
    if args.time_labeller:
      _time_labeller(args.time_labeller, args.labeller_images, args.batch_size, s)
  finally:
    if not args.dir:
      shutil.rmtree(folder, ignore_errors=True)  # local only: benchmark scratch


if __name__ == "__main__":
  import sys
  main(sys.argv[1:])
