"""Corruption robustness (Calian et al. 2022, "seed 003"): parts and their index.

  networks.py    corruption networks c_phi (EDSR backbone, compressive autoencoder), functional
                 with optional per-group weights
  ada.py         AdversarialAugment: per-layer weight-perturbation ball, random start,
                 iterated FGSM, projection
  ssim.py        SSIM as tf.image.ssim and the SSIM < 0.3 line-search guard (App. G)
  augmix.py      AugMix (Hendrycks et al. 2020b), stateless, and its Jensen-Shannon term
  stage.py       the training-step stage: (AdA) -> (AugMix [+ JSD]) as an Objective option
  deepaugment.py DeepAugment (Hendrycks et al. 2020a) processed copies of the training set
  cifar10c.py    CIFAR-10-C suite: 15 corruptions x 5 severities, mCE as seed 003 Table 1

docs/corruptions.md is the user guide.
"""
