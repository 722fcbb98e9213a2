"""Class-conditional EDM generator (Karras et al. 2022) built from parts.

`denoiser` (preconditioning, noise distribution, loss; Table 1), `unet` (DDPM++-style F sized
by gin), `sampler` (Heun sampler, Algorithm 2; per-image stateless noise), `training` (the loop
of rgd.train_generator), `store` (a trained generator on disk). Sampling a generator into
TFRecords and FID live with the other generated-data tools in rgd.datagen. See
docs/generative.md.
"""
from rgd.edm import denoiser, sampler, unet
