"""DeepAugment (Hendrycks et al. 2020a, "The Many Faces of Robustness"): a processed copy of
the training set made by passing every image through a randomly *distorted* image-to-image
network. Seed 003 App. A uses it as the first stage of its pipeline ("(10x)": ten copies).

The distortions follow hendrycks/imagenet-r `DeepAugment/EDSR_distort_imagenet.py`:
  * weights (`get_weights`, three options drawn per draw, 0-16 there): rgd implements options
    0 (reverse the output filters of a block), 1 (negate a block's first conv), 2 (zero it),
    3 (-GELU of its kernels), 4 and 5 (Laplacian / [-1..8..-1] masks on its 3x3 kernels),
    6 (multiplicative noise on the second conv), 7 (mirror the first conv, negate the second),
    11 (uniform(-0.5, 0.5) noise on a second conv), 12 (rot90 of kernels), 13 (random +-1
    signs), 14 (random 0/1 mask), 15 (negate 32 of the first conv's filters). Options 8-10 and
    16 (convolving kernels with kernels, top-1 filters) are left out. The reference picks block
    indices among EDSR's 16; here among the network's residual blocks (EDSR or CAE).
  * activations (EDSR only; `forward`'s pre_ and body_distortions, one of each per draw):
    swap 5 channel pairs, a Bernoulli(0.55) 0/1 mask or a +-1 mask after the head; negation,
    ReLU/GELU, or a spatial/channel flip after the fifth body module, or 3 skipped blocks.
The reference re-draws the weights with probability 0.05 per image (every 20 images on
average) and the activation distortions per image; rgd draws both once per group of
`images_per_draw` = 20 consecutive images, so that a group runs as one batch.

Everything is keyed by (seed, copy, group): a copy is reproducible, and an interrupted write
resumes (rgd.datagen.writer).
"""
import json
import os

import numpy as np
import tensorflow as tf

from rgd.runtime import fileio
from rgd.datagen import writer

WEIGHT_OPTIONS = (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
LAPLACIAN = np.array([[0, 1, 0], [1, -4., 1], [0, 1, 0]], np.float32)
EDGE = np.array([[-1, -1, -1], [-1, 8., -1], [-1, -1, -1]], np.float32)


def _gelu(w):
  return np.asarray(tf.nn.gelu(w, approximate=False))


def distort_weights(params, blocks, rng, num_options=3):
  """A copy of `params` with `num_options` weight distortions (kernels HWIO)."""
  p = {k: np.array(v, np.float32, copy=True) for k, v in params.items()}
  pick = lambda: blocks[rng.integers(len(blocks))]
  for option in rng.choice(WEIGHT_OPTIONS, size=num_options):
    b = pick()
    k1, k2, b1, b2 = (f"{b}/conv1/kernel", f"{b}/conv2/kernel", f"{b}/conv1/bias",
                      f"{b}/conv2/bias")
    if option == 0:
      for k in (k1, k2):
        p[k] = p[k][..., ::-1]
      for k in (b1, b2):
        p[k] = p[k][::-1]
    elif option == 1:
      p[k1], p[b1] = -p[k1], -p[b1]
    elif option == 2:
      p[k1], p[b1] = 0 * p[k1], 0 * p[b1]
    elif option == 3:
      p[k1], p[k2] = -_gelu(p[k1]), -_gelu(p[k2])
    elif option in (4, 5) and p[k1].shape[0] == 3:
      mask = LAPLACIAN if option == 4 else EDGE
      p[k1] = p[k1] * mask[:, :, None, None]
    elif option == 6:
      # The reference computes 2 * rand_like(w - 1), i.e. 2 * U[0, 1): factor in [1, 1 + 4u).
      p[k2] = p[k2] * (1 + 2 * rng.uniform() * (2 * rng.uniform(size=p[k2].shape)))
    elif option == 7:
      p[k1], p[k2] = p[k1][:, ::-1], -p[k2]
    elif option == 11:
      p[k2] = p[k2] + (rng.uniform(size=p[k2].shape) - 0.5)
    elif option == 12:
      for _ in range(5):
        k = f"{pick()}/conv{rng.integers(1, 3)}/kernel"
        if rng.integers(2) == 0:  # spatial axes; the in/out channel axes need a square kernel
          p[k] = np.rot90(p[k], rng.integers(1, 4), axes=(0, 1))
        elif p[k].shape[2] == p[k].shape[3]:
          p[k] = np.rot90(p[k], rng.integers(1, 4), axes=(2, 3))
    elif option in (13, 14):
      for _ in range(5):
        k = f"{pick()}/conv1/kernel"
        mask = np.round(rng.uniform(size=p[k].shape))
        p[k] = p[k] * (mask * 2 - 1 if option == 13 else mask)
    elif option == 15:
      for _ in range(5):
        k = f"{pick()}/conv1/kernel"
        filters = rng.integers(p[k].shape[-1], size=p[k].shape[-1] // 2)
        p[k][..., filters] *= -1
  return {k: np.ascontiguousarray(v, np.float32) for k, v in p.items()}


def activation_distortions(rng, num_blocks):
  """(pre, mid, skip) for EDSR.apply, as the reference's pre_/body_distortions."""
  pre_choice, body_choice = rng.integers(1, 5), rng.integers(1, 6)
  pre = mid = None
  skip = ()
  seed = [int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2)]
  if pre_choice == 1:
    def pre(h):
      perm = np.arange(h.shape[-1])
      for _ in range(5):
        a, b = rng.integers(h.shape[-1], size=2)
        perm[a], perm[b] = perm[b], perm[a]
      return tf.gather(h, perm, axis=-1)
  elif pre_choice == 2:
    pre = lambda h: h * tf.round(tf.random.stateless_uniform(tf.shape(h), seed) + 0.45)
  elif pre_choice == 3:
    pre = lambda h: h * (tf.round(tf.random.stateless_uniform(tf.shape(h), seed) + 0.475) * 2
                         - 1)
  if body_choice == 1:
    mid = lambda h: -h
  elif body_choice == 2:
    mid = tf.nn.relu if rng.integers(0, 3) == 1 else tf.nn.gelu
  elif body_choice == 3:
    axes = [1, 2] if rng.integers(0, 3) == 1 else [1, 3]  # NCHW (C, H) / (C, W) -> NHWC
    mid = lambda h: tf.reverse(h, [3 if a == 1 else a - 1 for a in axes])
  elif body_choice == 4:
    skip = tuple(sorted({int(i) for i in rng.integers(2, num_blocks, size=3)}))
  return pre, mid, skip


class DeepAugmentSource:
  """A `rgd.datagen.sources`-style source: index i is copy i // N of image i % N, distorted."""

  def __init__(self, network, params, images, num_copies=1, seed=0, images_per_draw=20):
    self.network, self.params, self.images = network, params, np.asarray(images)
    self.num_copies, self.seed, self.images_per_draw = int(num_copies), int(seed), \
        int(images_per_draw)
    self.num_images = len(self.images) * self.num_copies

  def process_group(self, copy, group):
    """uint8 images of one group (same distorted network)."""
    n = len(self.images)
    start = group * self.images_per_draw
    x = self.images[start:min(start + self.images_per_draw, n)]
    rng = np.random.default_rng([self.seed, copy, group])
    params = distort_weights(self.params, self.network.residual_blocks(), rng)
    kwargs = {}
    if hasattr(self.network, "num_blocks") and type(self.network).__name__ == "EDSR":
      pre, mid, skip = activation_distortions(rng, self.network.num_blocks)
      kwargs = dict(pre=pre, mid=mid, skip=skip)
    out = self.network.apply(params, tf.constant(x, tf.float32) / 255., **kwargs)
    out = tf.where(tf.math.is_finite(out), out, 0.)  # a zeroed/negated net may give NaN
    return np.round(np.clip(out.numpy(), 0, 1) * 255).astype(np.uint8)

  def take(self, indices):
    indices = np.asarray(indices, np.int64)
    n = len(self.images)
    out = np.empty((len(indices),) + self.images.shape[1:], np.uint8)
    keys = {}
    for j, i in enumerate(indices):
      keys.setdefault((int(i) // n, (int(i) % n) // self.images_per_draw), []).append(j)
    for (copy, group), rows in keys.items():
      processed = self.process_group(copy, group)
      local = [(int(indices[j]) % n) - group * self.images_per_draw for j in rows]
      out[rows] = processed[local]
    return out


def write_deepaugment(folder, network, params, images, labels, num_copies=1, seed=0,
                      examples_per_shard=10_000, images_per_draw=20):
  """Writes the processed copies as TFRecord shards `deepaugment-*` (rgd.data.tfrecord schema,
  original labels) plus metadata.json into `folder`; re-running skips finished shards.
  The plan keeps index order, so each shard processes whole groups."""
  source = DeepAugmentSource(network, params, images, num_copies, seed, images_per_draw)
  total = source.num_images
  plan = {"index": np.arange(total, dtype=np.int64),
          "label": np.tile(np.asarray(labels, np.int64), num_copies),
          "score": np.zeros(total)}
  tf.io.gfile.makedirs(folder)
  names = writer.write_shards(source, plan, folder, examples_per_shard, prefix="deepaugment",
                              has_scores=False)
  meta = dict(kind="deepaugment", network=type(network).__name__, num_copies=num_copies,
              num_examples=total, seed=seed, images_per_draw=images_per_draw, shards=names,
              weight_options=list(WEIGHT_OPTIONS))
  fileio.atomic_write_text(os.path.join(folder, writer.METADATA_FILE),
                           json.dumps(meta, indent=2) + "\n")
  return names
