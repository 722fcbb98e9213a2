"""Generated images chosen by name: what the labelling job (rgd.datagen.pipeline) reads.

A generator is one entry of `REGISTRY`: a name and a function (argument, settings) -> Images.
`make("NAME:ARG", **settings)` looks the name up and calls it with the settings its signature
names (the others are ignored, so a caller such as tools/make_tfrecords.py can pass every flag
it has). Today's entries:

  files:PATH   images already on disk: an .npz, .npy file/glob/folder, a folder of PNG/JPEG
               files, a glob of .npz (rgd.datagen.sources); any filesystem
  gaussian     the class-conditional Gaussian of seed 001 (Gowal et al. 2021) Sec. 3.2, fitted
               on the real training set `dataset` and sampled into the job's cache
  edm:DIR      an EDM trained by rgd.train_generator in DIR, sampled on the local devices and
               split over TF_CONFIG workers (rgd.datagen.sample_job)
  adm:PATH     guided-diffusion's released ImageNet-64 ADM (`64x64_diffusion.pt`) restricted to
               a class subset (`classes`: 'tinyimagenet', 'imagenet' or a list), labelled by
               position in the subset (rgd.datagen.adm_sampling); seed 001 Sec. 4, TinyImageNet

A new generator is one more `@register("name")` function returning Images. Nothing is read or
generated when an entry is called: `Images.open(cache_dir)` does it, and only when the job
needs the images (a re-run that finds its selection saved never generates again).
"""
import dataclasses
import inspect
import os
from typing import Callable

from absl import logging

from rgd.datagen import sources
from rgd.errors import ConfigError
from rgd.runtime import fileio


@dataclasses.dataclass(frozen=True)
class Images:
  """What a generator gives the job.

  source: JSON-able description (metadata.json's "source"; a re-run must give the same).
  open: cache_dir -> sources.Source; may generate into cache_dir (a local folder unless
    `shared`).
  shared: the opened source is files that every process can read (what Beam workers need).
  worker, num_workers: this process's share of a job split over workers (each writes its own
    OUT/worker-w-of-W/ with its share of keep_per_class).
  """
  source: dict
  open: Callable
  shared: bool = False
  worker: int = 0
  num_workers: int = 1


REGISTRY = {}


def register(name):
  """Decorator: adds a generator function (argument or None, **settings) -> Images."""
  def add(fn):
    REGISTRY[name] = fn
    return fn
  return add


def make(spec, **settings):
  """Images of `spec` ("gaussian", "edm:DIR", "files:PATH"), given the settings the entry
  takes (e.g. dataset=..., num_per_class=...)."""
  name, _, arg = str(spec).partition(":")
  if name not in REGISTRY:
    raise ConfigError(f"generator {spec!r}: unknown; expected one of "
                      + ", ".join(repr(n) for n in sorted(REGISTRY)))
  fn = REGISTRY[name]
  params = inspect.signature(fn).parameters
  return fn(arg or None, **{k: v for k, v in settings.items() if k in params})


def _no_argument(name, arg):
  if arg is not None:
    raise ConfigError(f"generator '{name}:{arg}': '{name}' takes no argument")


@register("files")
def files(path):
  """Images on disk (formats: rgd.datagen.sources), identified by path, size and time."""
  if not path:
    raise ConfigError("generator 'files:PATH' needs a path")
  gfile = fileio.gfile
  info = {"kind": "input", "path": path if fileio.is_remote(path) else os.path.abspath(path)}
  if gfile.exists(path) and not gfile.isdir(path):
    stat = gfile.stat(path)
    info.update(size=stat.length, mtime=int(stat.mtime_nsec // 10**9))
  return Images(info, lambda cache_dir: sources.open_source(path, cache_dir), shared=True)


@register("gaussian")
def gaussian(arg, dataset="cifar10", fit_split="train_full", num_per_class=100_000,
             generator_seed=0, num_classes=None, num_validation=1024):
  """Seed 001 Sec. 3.2: num_per_class samples per class of a Gaussian fitted on `dataset`'s
  split `fit_split` ('train' leaves out the `num_validation` images rgd.train holds out),
  written to cache_dir/gaussian (image i is of class i % K)."""
  _no_argument("gaussian", arg)
  info = {"kind": "gaussian", "dataset": dataset, "split": fit_split,
          "num_per_class": num_per_class, "generator_seed": generator_seed}
  if fit_split == "train":
    info["num_validation"] = num_validation

  def open_source(cache_dir):
    # pylint: disable=g-import-not-at-top
    from rgd.data import datasets
    from rgd.datagen import gaussian as gaussian_lib
    from rgd.runtime import progress
    images, labels = datasets.load_split(dataset, fit_split, num_validation=num_validation)
    k = datasets.num_classes_of(dataset, num_classes)
    logging.info("Fitting a class-conditional Gaussian to %d images of %s", len(images), dataset)
    model = gaussian_lib.ClassConditionalGaussian.fit(images, labels, k)
    del images
    bar = progress.Progress(num_per_class * k, "sampling", "img")
    folder = gaussian_lib.write_samples(model, num_per_class, os.path.join(cache_dir, "gaussian"),
                                        seed=generator_seed, progress=bar)
    bar.close()
    return sources.open_source(folder)
  return Images(info, open_source)


@register("edm")
def edm(generator_dir, num_images=1_000_000, generator_seed=0, chunk_size=10_000,
        batch_per_device=64, num_steps=18, s_churn=0.0, guidance=0.0, debug_delay_s=0.0):
  """num_images samples of the EDM in `generator_dir` (image i of class i % K), this worker's
  chunks of them under TF_CONFIG (rgd.datagen.sample_job)."""
  if not generator_dir:
    raise ConfigError("generator 'edm:DIR' needs the folder of a trained generator")
  from rgd.datagen import sample_job  # pylint: disable=g-import-not-at-top
  worker, num_workers = sample_job.worker_split()
  info, open_source = sample_job.make_opener(
      generator_dir, num_images, generator_seed, chunk_size, batch_per_device, worker,
      num_workers, debug_delay_s, num_steps=num_steps, s_churn=s_churn, guidance=guidance)
  return Images(info, open_source, worker=worker, num_workers=num_workers)


@register("adm")
def adm(weights_path, classes="tinyimagenet", num_images=1_000_000, generator_seed=0,
        chunk_size=10_000, batch_per_device=64, debug_delay_s=0.0, sampler_overrides=None):
  """num_images samples of guided-diffusion's ImageNet-64 ADM (image i of ImageNet class
  classes[i % K], labelled i % K), this worker's chunks under TF_CONFIG. The sampler is the
  ImageNet-64 one of rgd.datagen.adm_sampling unless `sampler_overrides` (e.g. num_steps) say
  otherwise."""
  if not weights_path:
    raise ConfigError("generator 'adm:PATH' needs the path of 64x64_diffusion.pt")
  # pylint: disable=g-import-not-at-top
  from rgd.datagen import adm_sampling, sample_job
  worker, num_workers = sample_job.worker_split()
  config, open_source = adm_sampling.make_opener(
      weights_path, classes, num_images, generator_seed, chunk_size, batch_per_device, worker,
      num_workers, debug_delay_s, **(sampler_overrides or {}))
  return Images(config["source"], open_source, worker=worker, num_workers=num_workers)
