"""Sampling a trained EDM generator into the make_tfrecords pipeline, on all local devices and
split over workers, restartable.

    python tools/make_tfrecords.py --generator=edm:DIR --num_images=1000000 \
        --labeler=LABELER/model.keras --keep_per_class=... --output_dir=OUT

Image i (a global index in [0, num_images)) has class i % K and its own stateless noise seed
(`sampler.image_seeds(seed, i)`): the image is a function of (generator, seed, i) alone, not of
the batch, replica or worker that draws it.

Work is cut into chunks of `chunk_size` consecutive indices. With W workers (TF_CONFIG, as
rgd.train) worker w takes chunks w, w + W, w + 2W, ...; within a worker every step samples
`batch_per_device` images on each local device (tf.distribute.MirroredStrategy over the local
GPUs, or the default strategy). Each worker writes its own chunks, and then its own shards
(OUT/worker-w-of-W/ when W > 1, rgd.datagen.pipeline.worker_share), through the labelling job
(rgd.datagen.pipeline), which reads the chunks as one `sources.open_npy` source.

Restart: a chunk is written under a temporary name and renamed (atomic on a local disk), and
chunks already there are skipped, so a killed job resumes without duplicating or losing
images. With the per-device batch fixed, every device runs the same shapes and per-example ops
(convolutions, GroupNorm, attention are row-independent), so the images are bit-identical
whatever the number of replicas (tested with 1 and 2 logical CPU devices).
"""
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from rgd.datagen import sources
from rgd.edm import denoiser, sampler, store
from rgd.runtime import progress as progress_lib, strategy as strategy_lib

CHUNK_PREFIX = "chunk-"


def worker_split():
  """(worker id, number of workers) from TF_CONFIG (a "chief" task counts as worker 0, as
  rgd.runtime.strategy); (0, 1) without it. Workers sample independently: no collectives needed."""
  config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  cluster = config.get("cluster", {})
  names = [t for t in ("chief", "worker") if t in cluster]
  tasks = [(t, i) for t in names for i in range(len(cluster[t]))]
  if len(tasks) <= 1:
    return 0, 1
  task = config.get("task", {})
  return tasks.index((task.get("type", "worker"), int(task.get("index", 0)))), len(tasks)


def chunk_ranges(num_images, chunk_size, worker=0, num_workers=1):
  """[(chunk number, start, stop)] of this worker's chunks of global indices."""
  return [(c, s, min(s + chunk_size, num_images))
          for c, s in enumerate(range(0, num_images, chunk_size)) if c % num_workers == worker]


def labels_of(indices, num_classes):
  """Image i is of class i % K: every stretch of indices is class balanced."""
  return (np.asarray(indices, np.int64) % num_classes).astype(np.int64)


def local_strategy():
  """MirroredStrategy over this host's GPUs (or the several logical devices of a test), else
  the default strategy. Never multi-worker: workers do not talk to each other here."""
  gpus = tf.config.list_logical_devices("GPU")
  devices = gpus if gpus else tf.config.list_logical_devices("CPU")
  if len(devices) > 1:
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  return tf.distribute.get_strategy()


class Sampler:
  """uint8 images of given global indices from `network` (F), on all replicas of `strategy`.

  sampler_kwargs: num_steps (18), s_churn (0: deterministic), s_min, s_max, s_noise,
  guidance (classifier-free guidance weight; 0/1: none).
  """

  def __init__(self, network, num_classes, seed=0, batch_per_device=64, strategy=None,
               **sampler_kwargs):
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = strategy_lib.local_replicas(self.strategy)
    self.num_classes, self.seed, self.batch_per_device = num_classes, seed, batch_per_device
    self.image_shape = tuple(network.input_shape[0][1:])
    guidance = sampler_kwargs.pop("guidance", 0.0)
    denoise = sampler.guided(denoiser.make_denoiser(network), guidance)
    shape = self.image_shape

    def replica_fn(indices):
      seeds = sampler.image_seeds(self.seed, indices)
      labels = tf.one_hot(indices % num_classes, num_classes)
      x = sampler.heun_sample(denoise, seeds, labels, shape, **sampler_kwargs)
      return tf.cast(tf.round(denoiser.from_model_range(x) * 255.0), tf.uint8)

    @tf.function
    def step(indices):
      return self.strategy.run(replica_fn, args=(indices,))
    self._step = step

  @property
  def batch_size(self):
    return self.batch_per_device * self.replicas

  def sample(self, indices):
    """uint8 [len(indices), H, W, C]; the last batch is padded (and the padding dropped) so
    every step has the same shapes."""
    indices = np.asarray(indices, np.int64)
    out = []
    for start in range(0, len(indices), self.batch_size):
      part = indices[start:start + self.batch_size]
      padded = np.concatenate([part, np.full(self.batch_size - len(part), part[-1])])
      stacked = tf.constant(padded.reshape(self.replicas, self.batch_per_device))
      dist = strategy_lib.distribute_stacked(self.strategy, stacked) if self.replicas > 1 \
          else stacked[0]
      result = self._step(dist)
      parts = self.strategy.experimental_local_results(result)
      out.append(np.concatenate([p.numpy() for p in parts])[:len(part)])
    return np.concatenate(out) if out else np.zeros((0,) + self.image_shape, np.uint8)


def sample_to_folder(image_sampler, folder, num_images, chunk_size, worker=0, num_workers=1,
                     progress=None, chunk_delay_s=0.0):
  """Samples this worker's chunks into folder/chunk-NNNNNNNN.npy (skipping those there), then
  folder/label.npy; returns (chunk paths in index order, label path). `folder` is local (the
  pipeline's local cache)."""
  os.makedirs(folder, exist_ok=True)  # local only: the job's local cache
  chunks = chunk_ranges(num_images, chunk_size, worker, num_workers)
  paths = [os.path.join(folder, f"{CHUNK_PREFIX}{c:08d}.npy") for c, _, _ in chunks]
  for name in os.listdir(folder):  # local only: leftovers of a killed write
    if name.startswith(".tmp-"):
      os.remove(os.path.join(folder, name))  # local only
  for (c, start, stop), path in zip(chunks, paths):
    if os.path.exists(path):  # local only: written whole (renamed) by an earlier run
      if progress is not None:
        progress.update(stop - start)
      continue
    images = image_sampler.sample(np.arange(start, stop))
    tmp = os.path.join(folder, f".tmp-{c:08d}.npy")
    np.save(tmp, images)
    os.replace(tmp, path)  # local only: atomic on one filesystem
    if progress is not None:
      progress.update(stop - start)
    if chunk_delay_s:
      time.sleep(chunk_delay_s)
  indices = np.concatenate([np.arange(s, e) for _, s, e in chunks]) if chunks else np.zeros(0)
  label_path = os.path.join(folder, "label.npy")
  tmp = os.path.join(folder, ".tmp-label.npy")
  np.save(tmp, labels_of(indices, image_sampler.num_classes))
  os.replace(tmp, label_path)  # local only
  return paths, label_path


def make_opener(generator_dir, num_images, seed=0, chunk_size=10_000, batch_per_device=64,
                worker=0, num_workers=1, chunk_delay_s=0.0, **sampler_kwargs):
  """(description, open_source) of the `edm:DIR` generator (rgd.datagen.generators): the
  source is this worker's sampled chunks, labelled with the class each image was generated
  for."""
  info = store.load_info(generator_dir)
  description = dict(kind="edm", generator=generator_dir, generator_step=info.get("step"),
                     num_images=num_images, generator_seed=seed, chunk_size=chunk_size,
                     worker=worker, num_workers=num_workers, **sampler_kwargs)

  def open_source(cache_dir):
    strategy = local_strategy()
    with strategy.scope():
      network, _ = store.load(generator_dir)
    image_sampler = Sampler(network, info["num_classes"], seed, batch_per_device, strategy,
                            **sampler_kwargs)
    mine = sum(e - s for _, s, e in chunk_ranges(num_images, chunk_size, worker, num_workers))
    logging.info("Sampling %d of %d images (worker %d of %d) from %s on %d replica(s), %d "
                 "per step", mine, num_images, worker, num_workers, generator_dir,
                 image_sampler.replicas, image_sampler.batch_size)
    bar = progress_lib.Progress(mine, "sampling", "img")
    paths, label_path = sample_to_folder(image_sampler, os.path.join(cache_dir, "edm"),
                                         num_images, chunk_size, worker, num_workers, bar,
                                         chunk_delay_s)
    bar.close()
    return sources.open_npy(paths, label_path, name=f"edm:{generator_dir}")
  return description, open_source
