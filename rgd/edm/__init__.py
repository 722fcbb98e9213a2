"""Class-conditional EDM generator (Karras et al. 2022) built from parts.

`denoiser` (preconditioning, noise distribution, summed loss; Table 1), `unet` (DDPM++ as
NVlabs/edm's SongUNet, sized by gin), `augment_pipe` (EDM's AugmentPipe, p 0.12, 9 labels),
`sampler` (Heun sampler, Algorithm 2; per-image stateless noise), `training` (the loop of
rgd.train_generator), `store` (a trained generator on disk). The 64x64 generator: `adm`
(NVlabs' DhariwalUNet), `iddpm` (iDDPMPrecond for guided-diffusion's DDPM), `imagenet_classes`
(ImageNet's class order and TinyImageNet's classes in it). Sampling a generator into
TFRecords and FID live with the other generated-data tools in rgd.datagen. See
docs/generative.md.
"""
from rgd.edm import denoiser, sampler, unet
