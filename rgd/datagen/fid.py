"""Frechet distance between Gaussian fits of features (Heusel et al. 2017, the standard FID).

FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the matrix square root from
scipy.linalg.sqrtm as in pytorch-fid / NVlabs/edm `fid.py` calculate_fid_from_inception_stats.
The number depends on the feature extractor; only the 2015-12-05 Inception graph's pool_3
features (rgd.datagen.inception) give numbers comparable with published FIDs.
"""
import numpy as np
import scipy.linalg

from rgd.datagen import complementarity
from rgd.runtime import progress


def gaussian_stats(features):
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():   # singular product: regularise (pytorch-fid does the same)
    offset = np.eye(sigma1.shape[0]) * 1e-6
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1, features2):
  return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def fid_of_images(extractor, real_images, generated_images, batch_size=256, stream=None):
  """FID between two sets of uint8 images [n, H, W, 3] in the feature space of `extractor`
  (rgd.datagen.complementarity.choose_extractor); returns (fid, dict of the two Gaussians'
  sizes and feature dimension)."""
  feats = []
  for name, images in (("real", real_images), ("generated", generated_images)):
    bar = progress.Progress(len(images), f"features ({name})", "img", stream=stream)
    feats.append(complementarity.extract_features(extractor, images, batch_size, bar))
    bar.close()
  return fid_from_features(*feats), {"num_real": len(feats[0]), "num_generated": len(feats[1]),
                                     "feature_dim": int(feats[0].shape[1])}
