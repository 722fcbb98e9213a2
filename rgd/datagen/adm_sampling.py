"""Sampling guided-diffusion's released ImageNet-64 ADM on a class subset (TinyImageNet's 200
classes) into the make_tfrecords pipeline, through the restartable sampling job
(rgd.datagen.sample_job), as NVlabs/edm samples its ImageNet-64 baseline: iDDPM
preconditioning (rgd.edm.iddpm), the Heun sampler with every noise level rounded to the DDPM
grid and clipped to the network's range (generate.py edm_sampler).

    python tools/make_tfrecords.py --generator=adm:64x64_diffusion.pt --classes=tinyimagenet \
        --num_images=1000000 --labeler=... --output_dir=OUT

Image i (a global index) is generated for ImageNet class classes[i % K] and labelled i % K (K =
len(classes)): its position in the subset, which for 'tinyimagenet' is the TinyImageNet class
index (sorted wnids, as rgd.data reads the real images). Its noise is keyed by (seed, i) alone
(`sampler.image_seeds`), so an image does not depend on the batch, replica or worker drawing it;
the sampling job's chunks (written whole, skipped when present, labelled `i % num_classes`) then
make a restart neither lose nor duplicate an image.
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from rgd.datagen import sample_job, sources
from rgd.edm import denoiser, iddpm, imagenet_classes, sampler
from rgd.errors import ConfigError
from rgd.runtime import progress as progress_lib, strategy as strategy_lib

# The stochastic sampler EDM tuned for this very checkpoint: Karras et al. 2022 Table 5, column
# "ImageNet-64, pre-trained" (guided-diffusion's ADM): S_churn 80, S_tmin 0.05, S_tmax 50,
# S_noise 1.003, with 256 steps (511 network evaluations per image; FID 2.07 -> 1.55). NVlabs'
# README command (`--S_churn=40`, otherwise the same) is Table 5's "our model" column, for
# their retrained `edm-imagenet-64x64-cond-adm.pkl`, not for this checkpoint.
IMAGENET64_SAMPLER = dict(num_steps=256, s_churn=80.0, s_min=0.05, s_max=50.0, s_noise=1.003)


class SubsetSampler(sample_job.Sampler):
  """sample_job.Sampler's interface (`sample(indices)` -> uint8 [N, 64, 64, 3], `num_classes`,
  `batch_size`) for an iDDPM-preconditioned network (F predicting eps in its first 3 outputs)
  restricted to the ImageNet classes `classes`. sampler_kwargs: those of
  rgd.edm.sampler.heun_sample (num_steps, sigma_min, sigma_max, rho, s_churn, s_min, s_max,
  s_noise); sigma_min / sigma_max are clipped to the network's grid [u_999, u_0]."""

  def __init__(self, network, classes, seed=0, batch_per_device=64, strategy=None,
               **sampler_kwargs):  # pylint: disable=super-init-not-called
    if sampler_kwargs.pop("guidance", 0.0) not in (0.0, 1.0):
      raise ConfigError("--guidance: guided-diffusion's ADM has no unconditional (null-label) "
                        "mode; sample it without classifier-free guidance")
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = strategy_lib.local_replicas(self.strategy)
    self.classes = [int(c) for c in classes]
    self.num_classes, self.seed, self.batch_per_device = len(self.classes), seed, batch_per_device
    self.image_shape = tuple(network.input_shape[0][1:])
    label_dim = int(network.inputs[2].shape[-1])
    if not self.classes or min(self.classes) < 0 or max(self.classes) >= label_dim:
      raise ConfigError(f"--classes: class indices must lie in [0, {label_dim}) for this "
                        f"network; got {self.classes[:5]}...")
    precond = iddpm.IDDPMPrecond(network)
    kwargs = dict(sampler_kwargs)
    # generate.py edm_sampler: sigma_min = max(sigma_min, net.sigma_min), sigma_max likewise.
    kwargs["sigma_min"] = max(kwargs.get("sigma_min", sampler.SIGMA_MIN), precond.sigma_min)
    kwargs["sigma_max"] = min(kwargs.get("sigma_max", sampler.SIGMA_MAX), precond.sigma_max)
    table = tf.constant(self.classes, tf.int64)
    shape = self.image_shape

    def replica_fn(indices):
      seeds = sampler.image_seeds(self.seed, indices)
      labels = tf.one_hot(tf.gather(table, indices % self.num_classes), label_dim)
      x = sampler.heun_sample(precond, seeds, labels, shape, round_sigma=precond.round_sigma,
                              **kwargs)
      return tf.cast(tf.round(denoiser.from_model_range(x) * 255.0), tf.uint8)

    @tf.function
    def step(indices):
      return self.strategy.run(replica_fn, args=(indices,))
    self._step = step

  def imagenet_class_of(self, indices):
    """The ImageNet class each global index is generated for."""
    return np.asarray(self.classes)[np.asarray(indices, np.int64) % self.num_classes]


def source_config(weights_path, classes_spec, num_images, seed=0, chunk_size=10_000, worker=0,
                  num_workers=1, **sampler_kwargs):
  """The `source` record make_tfrecords keeps beside the shards (what was sampled, how)."""
  return dict(kind="adm", generator=weights_path, classes=classes_spec,
              imagenet_classes=imagenet_classes.class_subset(classes_spec),
              num_images=num_images, generator_seed=seed, chunk_size=chunk_size, worker=worker,
              num_workers=num_workers, **sampler_kwargs)


def make_image_sampler(weights_path, classes_spec, seed=0, batch_per_device=64, strategy=None,
                       gd_config=None, **sampler_kwargs):
  """SubsetSampler of guided-diffusion's `.pt` (rgd.interop.guided_diffusion; `gd_config` its
  flags, the 64x64 model's by default) on `--classes=classes_spec`
  (rgd.edm.imagenet_classes.class_subset). The network is built under `strategy`'s scope;
  sampler_kwargs default to IMAGENET64_SAMPLER."""
  from rgd.interop import guided_diffusion  # pylint: disable=g-import-not-at-top  needs torch
  classes = imagenet_classes.class_subset(classes_spec)
  strategy = strategy or sample_job.local_strategy()
  with strategy.scope():
    network = guided_diffusion.load(weights_path, gd_config)
  return SubsetSampler(network, classes, seed, batch_per_device, strategy,
                       **dict(IMAGENET64_SAMPLER, **sampler_kwargs))


def make_opener(weights_path, classes_spec, num_images, seed=0, chunk_size=10_000,
                batch_per_device=64, worker=0, num_workers=1, chunk_delay_s=0.0, gd_config=None,
                **sampler_kwargs):
  """(config, open_source) for rgd.datagen.pipeline.make_tfrecords, as sample_job.make_opener
  for a trained EDM: the source is this worker's sampled chunks (cache_dir/adm), labelled with
  each image's position in the class subset. sampler_kwargs left out take IMAGENET64_SAMPLER."""
  sampler_kwargs = dict(IMAGENET64_SAMPLER, **sampler_kwargs)
  config = {"source": source_config(weights_path, classes_spec, num_images, seed, chunk_size,
                                    worker, num_workers, **sampler_kwargs)}

  def open_source(cache_dir):
    image_sampler = make_image_sampler(weights_path, classes_spec, seed, batch_per_device,
                                       gd_config=gd_config, **sampler_kwargs)
    mine = sum(e - s for _, s, e in sample_job.chunk_ranges(num_images, chunk_size, worker,
                                                            num_workers))
    logging.info("Sampling %d of %d images (worker %d of %d) of %d classes from %s",
                 mine, num_images, worker, num_workers, image_sampler.num_classes, weights_path)
    bar = progress_lib.Progress(mine, "sampling", "img")
    paths, label_path = sample_job.sample_to_folder(
        image_sampler, os.path.join(cache_dir, "adm"), num_images, chunk_size, worker,
        num_workers, bar, chunk_delay_s)
    bar.close()
    return sources.open_npy(paths, label_path, name=f"adm:{weights_path}")
  return config, open_source
