"""Deterministic certified robustness (seed 004, Altstidl et al. 2023), in parts:

  lipschitz    spectral norms: power iteration (training) and certified upper bounds (SVD/FFT)
  layers       Keras layers: LipConv2D, LiResNetBlock, LipDense, MinMax, Center, GloroHead;
               LinfDist (l_inf-dist / SortNet neurons, mean shift), LogitScale
  models       liresnet (GloroNet), linf_dist_net, sortnet, lipconvnet (LOT)
  lot          LOT convolution and head (Xu et al. 2022): Newton-Schulz orthogonalisation per
               frequency, certified bounds from the realised weights
  gloro        GloRo: product bound, K_ij, y_bot, losses, eps schedule
  linf_dist    p annealing, mixture loss
  certificate  sound certification (float32, rounding margin, ties never certify)
  validation   certified accuracy of the averaged model during training (rgd.train)

    result = certificate.certify(model, images, labels)
    certificate.certified_accuracy(result, 36 / 255)

The training objectives GloRo, LinfDist and LOT are in rgd/training/objectives/certified.py.
`python -m rgd.certify --model_dir=DIR` is the entry point; docs/certified.md the guide.
"""
from rgd.certified import certificate, gloro, layers, linf_dist, lipschitz, lot, models
