"""Class-conditional EDM generator (Karras et al. 2022) built from parts.

`edm` (preconditioning, noise distribution, loss; Table 1), `unet` (DDPM++-style F sized by
gin), `sampler` (Heun sampler, Algorithm 2; per-image stateless noise), `fid` (Frechet distance
of feature Gaussians), `training` (the loop of rgd.train_generator), `store` (a trained
generator on disk), `sample_job` (sampling into tools/make_tfrecords.py on all devices and
workers). See docs/generative.md.
"""
from rgd.generative import edm, fid, sampler, unet
