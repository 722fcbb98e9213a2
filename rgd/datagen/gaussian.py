"""The class-conditional Gaussian generator of seed 001 (Gowal et al. 2021) Sec. 3.2.

"We proceed by fitting a multivariate Gaussian to each set of 5K training images corresponding
to each class in CIFAR-10. For each class, we sample 100K images" -- a mean and a *full*
covariance per class over the flattened pixels in [0, 1]; samples are clipped to [0, 1]. The
images are blurry (FID 117.6, App. D) yet add +0.93% robust accuracy at 80% real and 20%
generated images per batch (Sec. 3.2: "decreasing the proportion of real samples ... the optimal
proportion of 80%"; Fig. 3(a)), which is why it is a useful generator that needs no downloaded model.

The covariance is kept as a factor F with Sigma = F F^T, so sampling is mu + F z with
z ~ N(0, I):
  * with n <= D images in a class (e.g. CIFAR-100: 500 images, D = 3072) F is the centred data
    itself, X_c^T / sqrt(n - 1), which gives the exact (rank-deficient) sample covariance without
    any decomposition;
  * otherwise F is the Cholesky factor of the sample covariance (a tiny diagonal jitter is added
    only if the covariance is numerically singular, e.g. a pixel constant within a class).
"""
import os

import numpy as np

from rgd.errors import DataError

# Images per sampling batch: batch j is drawn with the generator seeded (seed, j), so the sample
# sequence depends on it; the records tool and the on-the-fly source both use this one.
SAMPLE_BATCH = 1000


class ClassConditionalGaussian:
  """N(mean_k, F_k F_k^T) over flattened images in [0, 1], one per class k."""

  def __init__(self, means, factors, image_shape):
    self.means = np.asarray(means, np.float64)
    # float32 factors: half the memory (CIFAR-10: 10 x 3072^2) and twice the sampling speed;
    # their rounding (1e-7 relative) is far below the 1/255 quantisation of the output.
    self.factors = [np.asarray(f, np.float32) for f in factors]
    self.image_shape = tuple(int(s) for s in image_shape)
    self.num_classes = len(self.means)
    if len(self.factors) != self.num_classes:
      raise DataError(f"{len(self.factors)} covariance factors for {self.num_classes} means")

  @classmethod
  def fit(cls, images, labels, num_classes, jitter=1e-6):
    """Fits each class's mean and (unbiased, n - 1) sample covariance to uint8 `images`."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
      raise DataError(f"Gaussian fit needs uint8 images [N, H, W, C], got {images.dtype} "
                      f"{images.shape}")
    dim = int(np.prod(images.shape[1:]))
    means, factors = [], []
    for k in range(num_classes):
      x = images[labels == k].reshape(-1, dim).astype(np.float64) / 255.0
      n = len(x)
      if n < 2:
        raise DataError(f"class {k} has {n} training image(s); a covariance needs at least 2")
      mean = x.mean(axis=0)
      xc = x - mean
      if n - 1 <= dim:
        factor = xc.T / np.sqrt(n - 1)
      else:
        factor = _cholesky(xc.T @ xc / (n - 1), jitter)
      means.append(mean)
      factors.append(factor)
    return cls(np.stack(means), factors, images.shape[1:])

  def covariance(self, k):
    f = self.factors[k].astype(np.float64)
    return f @ f.T

  def sample_flat(self, labels, rng):
    """Unclipped float64 samples [n, D], one of class labels[i] each."""
    labels = np.asarray(labels)
    out = np.empty((len(labels), self.means.shape[1]))
    for k in np.unique(labels):
      rows = labels == k
      z = rng.standard_normal((int(rows.sum()), self.factors[k].shape[1]), dtype=np.float32)
      out[rows] = self.means[k] + z @ self.factors[k].T
    return out

  def sample(self, labels, rng):
    """uint8 images [n, H, W, C]: samples clipped to [0, 1] (Sec. 3.2), then quantised."""
    x = np.clip(self.sample_flat(labels, rng), 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8).reshape((len(labels),) + self.image_shape)

  def batch(self, j, batch_size=SAMPLE_BATCH, seed=0, total=None):
    """(uint8 images, int64 labels) of batch j of the sample sequence: images j * batch_size
    onwards (up to `total`), image i of class i % K, drawn with the generator seeded (seed, j).
    The one definition of the sequence that `batches` (tools/make_tfrecords.py) and the
    on-the-fly source (rgd.datagen.gaussian_stream) both read."""
    start = j * batch_size
    labels = np.arange(start, start + batch_size) % self.num_classes
    rng = np.random.default_rng([seed, j])
    # A last, partial batch is the start of the full one (the draws of a class depend on how
    # many images of it the batch holds): any number of images is a prefix of the sequence.
    images = self.sample(labels, rng)
    keep = batch_size if total is None else max(0, min(batch_size, total - start))
    return images[:keep], labels[:keep].astype(np.int64)

  def batches(self, num_per_class, batch_size=SAMPLE_BATCH, seed=0):
    """Yields (first index, uint8 images, labels) for num_per_class * K images in total.

    Image i has class i % K, so every stretch of the output is class balanced (and so is every
    shard the writer builds from it). Batch j is drawn with its own seed (seed, j), so any batch
    can be regenerated on its own and the output does not depend on the batch order.
    """
    total = num_per_class * self.num_classes
    for j, start in enumerate(range(0, total, batch_size)):
      images, labels = self.batch(j, batch_size, seed, total)
      yield start, images, labels


def _cholesky(cov, jitter):
  scale = float(np.mean(np.diag(cov))) or 1.0
  eps = 0.0
  for _ in range(8):
    try:
      return np.linalg.cholesky(cov + eps * np.eye(len(cov)))
    except np.linalg.LinAlgError:
      eps = jitter * scale if eps == 0.0 else eps * 10
  raise DataError("class covariance is not positive semi-definite even with jitter "
                  f"{eps:.1e}; are the images constant?")


def write_samples(gaussian, num_per_class, folder, batch_size=SAMPLE_BATCH, seed=0,
                  progress=None):
  """Samples num_per_class images per class into folder/image.npy and folder/label.npy (the
  layout `sources.open_source` reads, by index), streaming: one batch in memory at a time.

  Both files are written under temporary names and renamed, label.npy last, so a folder with
  label.npy is complete; a re-run with an existing complete folder returns at once.
  `folder` is local (a cache written with local file calls; rgd.datagen.pipeline keeps it on
  local disk).
  """
  image_path, label_path = os.path.join(folder, "image.npy"), os.path.join(folder, "label.npy")
  total = num_per_class * gaussian.num_classes
  if os.path.exists(label_path) and os.path.exists(image_path):  # local only: the job's local cache
    done = np.load(label_path, allow_pickle=False)  # local only: the job's local cache
    if len(done) == total:
      return folder
  os.makedirs(folder, exist_ok=True)  # local only: the job's local cache
  tmp_images = os.path.join(folder, ".image.npy.tmp")
  images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8,
                                     shape=(total,) + gaussian.image_shape)
  labels = np.empty(total, np.int64)
  for start, x, y in gaussian.batches(num_per_class, batch_size, seed):
    images[start:start + len(x)] = x
    labels[start:start + len(y)] = y
    if progress is not None:
      progress.update(len(x))
  images.flush()
  del images
  os.replace(tmp_images, image_path)  # local only: the job's local cache
  tmp_labels = os.path.join(folder, ".label.tmp.npy")
  np.save(tmp_labels, labels)
  os.replace(tmp_labels, label_path)  # local only: the job's local cache
  return folder
