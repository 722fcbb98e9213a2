"""Corruption robustness (Calian et al. 2022, "seed 003"): parts and their index.

  networks.py    corruption networks c_phi: the published EDSR-baseline x4 and DeepAugment CAE,
                 rgd's own CIFAR-10 EDSR and CAE; functional, with optional per-group weights;
                 PyTorch state dicts -> rgd names (tools/convert_corruption_net.py)
  ada.py         AdversarialAugment: per-layer weight-perturbation ball, random start,
                 iterated FGSM, projection
  ssim.py        SSIM as tf.image.ssim and the SSIM < 0.3 line-search guard (App. G)
  stage.py       the training-step stage: (AdA) -> (AugMix [+ JSD]) as an Objective option
  deepaugment.py DeepAugment (Hendrycks et al. 2020a): the reference's weight, activation and
                 latent distortions; processed copies of the training set

AugMix lives in rgd/augment/augmix.py, the CIFAR-10-C suite in rgd/evaluation/cifar10c.py.

docs/corruptions.md is the user guide.
"""
