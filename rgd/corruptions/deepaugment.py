"""DeepAugment (Hendrycks et al. 2020a, "The Many Faces of Robustness"): a processed copy of
the training set made by passing every image through a randomly *distorted* image-to-image
network. Seed 003 App. A uses it as the first stage of its pipeline ("(10x)": ten copies).

The distortions are those of hendrycks/imagenet-r `DeepAugment/`, all of them:

  EDSR (`EDSR_distort_imagenet.py`; for `edsr_baseline_x4`, and for rgd's `edsr_cifar`)
  * weights (`get_weights`, lines 166-262): three options drawn from 0-16 with replacement,
    each on the residual blocks the reference picks for it (`EDSR_OPTION_BLOCKS`): 0 reverse
    the output filters of both convs, 1 negate the first conv, 2 zero it, 3 -GELU of both
    kernels, 4 and 5 Laplacian / [-1..8..-1] masks on the first conv's 3x3 kernels, 6
    multiplicative noise on the second conv, 7 mirror the first conv and negate the second, 8-10
    convolve a conv's kernels with a random kernel (`conv_kernels`), 11 uniform(-0.5, 0.5)
    noise, 12 rot90 of kernels (spatially or over the channel axes), 13 random +-1 signs, 14 a
    random 0/1 mask, 15 negate 32 filters drawn with replacement, 16 keep the largest of each
    3x3 kernel (`keep_max`).
  * activations (`forward`, lines 104-164; one of each per draw): the channel "swap" (five
    times `x[:, c1], x[:, c2] = x[:, c2], x[:, c1]`, which in PyTorch copies c2 into c1: the
    right-hand side holds views, and the first assignment overwrites what the second view
    shows), a Bernoulli(0.55) 0/1 or a +-1 mask after the head; negation, ReLU/GELU or a flip
    over (C, H) / (C, W) after the fifth body module, or the skip loop, which keeps only the last
    kept body module (rgd.corruptions.networks.edsr_body).
  CAE (`CAE_distort_imagenet.py` and `cae_32x32x32_zero_pad_bin.py`; for `deepaugment_cae`)
  * weights (`get_weights`): one option drawn from 0-7 (`random.sample(range(8), 1)`: option
    8 is written but never drawn) on a layer from the option's range of the 21 layers.
  * latent (`CAE.forward`, one of 0-8 per draw): masks and sign flips of code positions, a
    permutation of the first 10 channels, flips of chosen channels, random 3x3 mixing
    convolutions of the code, and (option 0) noise scaling of the binarised code.
  rgd's `cae_cifar` has no reference distortions; it gets the EDSR weight options on its
  residual blocks (any block where the reference's indices run past its 6).

The reference re-draws the weights with probability 0.05 per image (every 20 images on
average) and the activation distortions per image; rgd draws both once per group of
`images_per_draw` = 20 consecutive images, so that a group runs as one batch (the 0/1 and +-1
masks are still drawn per element). Python's `random`, NumPy's and torch's generators of the
reference become one NumPy generator keyed by (seed, copy, group): a copy is reproducible, and
an interrupted write resumes (rgd.datagen.writer). Images are written as the reference's
`to_pil_image` does: clamped to [0, 1], times 255, truncated to uint8.
"""
import json
import os

import numpy as np
import tensorflow as tf

from rgd.runtime import fileio
from rgd.datagen import writer
from rgd.corruptions import networks

LAPLACIAN = np.array([[0, 1, 0], [1, -4., 1], [0, 1, 0]], np.float32)  # option 4, line 192
EDGE = np.array([[-1, -1, -1], [-1, 8., -1], [-1, -1, -1]], np.float32)  # option 5, line 196
# The residual blocks each EDSR weight option picks from (`get_weights`, lines 172-252):
# np.arange(0, 10, 3), np.arange(1, 10, 3), np.arange(1, 13, 4), np.arange(1, 12, 4), range(15).
EDSR_OPTION_BLOCKS = {0: (0, 3, 6, 9), 1: (1, 4, 7), 2: (0, 3, 6, 9), 3: (0, 3, 6, 9),
                      4: (0, 3, 6, 9), 5: (0, 3, 6, 9), 6: (0, 3, 6, 9), 7: (0, 3, 6, 9),
                      8: (1, 5, 9), 9: (0, 3, 6, 9), 10: (1, 5, 9)}
EDSR_OPTION_BLOCKS.update({k: tuple(range(15)) for k in range(11, 17)})
WEIGHT_OPTIONS = tuple(range(17))  # np.random.randint(0, 17, size=3), line 169
# CAE_distort_imagenet.py OPTION_LAYER_MAPPING with NUM_LAYERS = 21 (layer indices of
# networks.CAE_LAYERS); NUM_DISTORTIONS = 8, so options 0-7 are drawn.
CAE_OPTION_LAYERS = {0: range(11, 16), 1: range(8, 14), 2: range(8, 14), 3: range(10, 14),
                     4: range(8, 14), 5: range(8, 14), 6: range(8, 14), 7: range(8, 14)}
CAE_WEIGHT_OPTIONS = tuple(range(8))
CAE_LATENT_OPTIONS = tuple(range(9))  # np.random.choice(range(9)) in CAE.forward


def _gelu(w):
  return np.asarray(tf.nn.gelu(np.asarray(w, np.float32), approximate=False))


def _oihw(w):
  return np.transpose(w, (3, 2, 0, 1))


def _hwio(w):
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32)


def conv_kernels(w, z):
  """torch.nn.functional.conv2d(w, z, padding=1) with both in PyTorch's OIHW layout, as
  options 8-10 apply it: the kernels w [O, I, k, k] taken as O images of I channels, filtered
  by z [O', I, 3, 3]. Arguments and result in rgd's HWIO layout."""
  a, b = _oihw(w).astype(np.float64), _oihw(z).astype(np.float64)
  k = a.shape[2]
  pad = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
  out = np.zeros((a.shape[0], b.shape[0], k, k))
  for dx in range(3):
    for dy in range(3):  # cross-correlation, as torch's conv2d
      out += np.einsum("nchw,oc->nohw", pad[:, :, dx:dx + k, dy:dy + k], b[:, :, dx, dy])
  return _hwio(out)


def keep_max(w):
  """Option 16: each [k, k] kernel keeps only its largest entry (torch.topk(k=1) over the
  flattened kernel, scattered back into zeros)."""
  k, _, i, o = w.shape
  flat = w.reshape(k * k, i, o)
  top = np.argmax(flat, axis=0)
  out = np.zeros_like(flat)
  np.put_along_axis(out, top[None], np.take_along_axis(flat, top[None], 0), 0)
  return out.reshape(w.shape)


def channel_copy_index(num_channels, pairs):
  """The gather index of the reference's channel "swap" (line 117) for pairs (c1, c2) applied
  in order: each copies channel c2's current content into c1 and leaves c2 as it is."""
  index = np.arange(num_channels)
  for c1, c2 in pairs:
    index[c1] = index[c2]
  return index


def _blocks_for(option, blocks):
  """Block names among the reference's indices for `option`; all blocks where none exists."""
  names = [blocks[i] for i in EDSR_OPTION_BLOCKS[option] if i < len(blocks)]
  return names or list(blocks)


def edsr_weight_option(p, option, blocks, rng):
  """Applies EDSR weight option `option` to the dict `p` (HWIO kernels) in place."""
  pick = lambda: (lambda names: names[rng.integers(len(names))])(_blocks_for(option, blocks))
  b = pick()
  k1, k2, b1, b2 = (f"{b}/conv1/kernel", f"{b}/conv2/kernel", f"{b}/conv1/bias",
                    f"{b}/conv2/bias")
  features = p[k1].shape[-1]
  if option == 0:  # torch.flip(w, (0,)): the output filters, and the biases with them
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
    p[k1] = p[k1] * (LAPLACIAN if option == 4 else EDGE)[:, :, None, None]
  elif option == 6:
    # Line 200: 2 * rand_like(w - 1) is 2 * U[0, 1): the factor is 1 + 4 u r.
    p[k2] = p[k2] * (1 + 2 * np.float32(rng.uniform()) * (2 * rng.uniform(size=p[k2].shape)))
  elif option == 7:  # torch.flip(w, (-1,)): the kernel's width axis
    p[k1], p[k2] = p[k1][:, ::-1], -p[k2]
  elif option == 8:
    z = np.zeros(_oihw(p[k1]).shape, np.float32)
    for j in range(z.shape[0]):
      sx, sy = rng.integers(3, size=2)
      z[:, j, sx, sy] = rng.choice([1., -1.])
    p[k1] = conv_kernels(p[k1], _hwio(z))
  elif option == 9:  # (2 * rand * u - 1) / 6, line 214
    u = np.float32(rng.uniform())
    p[k1] = conv_kernels(p[k1], (2 * rng.uniform(size=p[k1].shape) * u - 1) / 6.)
  elif option == 10:  # Dirichlet(0.1 x 9) kernels, line 218
    z = rng.dirichlet([0.1] * 9, (features, features)).reshape(features, features, 3, 3)
    p[k2] = conv_kernels(p[k2], _hwio(z))
  elif option == 11:
    p[k2] = p[k2] + (rng.uniform(size=p[k2].shape) - 0.5) * 1.0
  elif option in (12, 16):
    for _ in range(5):
      k = f"{pick()}/conv{1 + rng.integers(2)}/kernel"  # body.{i}.body.{0 or 2}
      if option == 16:
        p[k] = keep_max(p[k])
        continue
      turns = rng.integers(1, 4)
      if rng.integers(2) == 0:  # dims (2, 3) of OIHW: the kernel's spatial axes
        p[k] = np.rot90(p[k], turns, axes=(0, 1))
      elif p[k].shape[2] == p[k].shape[3]:  # dims (0, 1) of OIHW: from O towards I
        p[k] = np.rot90(p[k], turns, axes=(3, 2))
  elif option in (13, 14):
    for _ in range(5):
      k = f"{pick()}/conv1/kernel"
      mask = np.round(rng.uniform(size=p[k].shape))
      p[k] = p[k] * (mask * 2 - 1 if option == 13 else mask)
  elif option == 15:
    for _ in range(5):
      k = f"{pick()}/conv1/kernel"
      # w[filters] *= -1 with repeated indices negates each chosen filter once.
      filters = rng.integers(p[k].shape[-1], size=p[k].shape[-1] // 2)
      p[k] = p[k].copy()
      p[k][..., filters] *= -1


def distort_weights(params, blocks, rng, num_options=3):
  """A copy of `params` with `num_options` EDSR weight options (kernels HWIO)."""
  p = {k: np.array(v, np.float32, copy=True) for k, v in params.items()}
  for option in rng.choice(WEIGHT_OPTIONS, size=num_options):
    edsr_weight_option(p, int(option), blocks, rng)
  return {k: np.ascontiguousarray(v, np.float32) for k, v in p.items()}


def activation_distortions(rng, num_blocks):
  """(pre, mid, skip) for the EDSRs' apply, as the reference's pre_/body_distortions."""
  pre_choice, body_choice = rng.integers(1, 5), rng.integers(1, 6)  # randint(1, 4), (1, 5)
  pre = mid = None
  skip = ()
  seed = [int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2)]
  if pre_choice == 1:
    def pre(h):
      c = h.shape[-1]
      # random.randint(0, 63) twice, five times (63 = the reference's features - 1)
      pairs = [tuple(rng.integers(c, size=2)) for _ in range(5)]
      return tf.gather(h, channel_copy_index(c, pairs), axis=-1)
  elif pre_choice == 2:  # round(U + 0.45): 1 with probability 0.55
    pre = lambda h: h * tf.round(tf.random.stateless_uniform(tf.shape(h), seed) + 0.45)
  elif pre_choice == 3:  # +1 with probability 0.525
    pre = lambda h: h * (tf.round(tf.random.stateless_uniform(tf.shape(h), seed) + 0.475) * 2
                         - 1)
  if body_choice == 1:
    mid = lambda h: -h
  elif body_choice == 2:
    mid = tf.nn.relu if rng.integers(0, 3) == 1 else (
        lambda h: tf.nn.gelu(h, approximate=False))  # F.gelu is exact
  elif body_choice == 3:
    axes = [3, 1] if rng.integers(0, 3) == 1 else [3, 2]  # NCHW (C, H) / (C, W) -> NHWC
    mid = lambda h: tf.reverse(h, axes)
  elif body_choice == 4:  # random.randint(2, 16): up to the body's last module, body_out
    skip = tuple(sorted({int(i) for i in rng.integers(2, num_blocks + 1, size=3)}))
  return pre, mid, skip


def _cae_layer(index):
  """(rgd name, the kernel axis that is torch's dim 0): the output filters of a conv, the
  input channels of a transposed conv ([in, out, kh, kw] in torch)."""
  name, _, transposed = networks.CAE_LAYERS[index]
  return name, 2 if transposed else 3


def cae_weight_option(p, option, i, j, rng):
  """Applies CAE weight option `option` to layers i, j (indices of networks.CAE_LAYERS) of the
  dict `p` in place, as `CAE_distort_imagenet.py` `get_weights` does."""
  (name_i, axis_i), (name_j, _) = _cae_layer(i), _cae_layer(j)
  wi, bi, wj = name_i + "/kernel", name_i + "/bias", name_j + "/kernel"
  rows = lambda w, k: (slice(None),) * axis_i + (k,)  # torch's w[k]
  if option == 0:
    # The reference flips weight_i, bias_i, weight_j, then "bias_j", which it names
    # get_name(j, "weight"): weight_j is flipped twice, i.e. left as it was, and with j == i
    # weight_i flips three times. Either way: weight_i and bias_i flipped, nothing else.
    p[wi] = np.flip(p[wi], axis_i)
    p[bi] = p[bi][::-1]
  elif option in (1, 2, 3):
    draws = 12 if option == 1 else 25
    for k in rng.integers(p[wi].shape[axis_i], size=draws):  # one after the other
      if option == 1:
        p[wi][rows(p[wi], k)], p[bi][k] = -p[wi][rows(p[wi], k)], -p[bi][k]
      elif option == 2:
        p[wi][rows(p[wi], k)], p[bi][k] = 0, 0
      else:
        p[wi][rows(p[wi], k)], p[bi][k] = -_gelu(p[wi][rows(p[wi], k)]), -_gelu(p[bi][k])
  elif option == 4:  # 4 * rand_like(w - 1): the factor is 1 + 8 u r, for i and then for j
    for w in (wi, wj):
      p[w] = p[w] * (1 + 2 * np.float32(rng.uniform()) * (4 * rng.uniform(size=p[w].shape)))
  elif option == 5:
    mask = np.round(rng.uniform(size=p[wi].shape))
    p[wi] = p[wi] * (mask if rng.uniform() < 0.5 else mask * 2 - 1)
  elif option == 6:  # rot90 over dims (2, 3) of torch's layout: the spatial axes
    p[wi] = np.rot90(p[wi], rng.integers(1, 4), axes=(0, 1))
  elif option == 7:  # negate the distinct ones among out_filters // 5 draws
    n = p[wi].shape[axis_i]
    for k in set(int(k) for k in rng.integers(n, size=n // 5)):
      p[wi][rows(p[wi], k)] = -p[wi][rows(p[wi], k)]


def cae_distort_weights(params, rng):
  """A copy of `params` with one CAE weight option (random.sample(range(8), 1))."""
  p = {k: np.array(v, np.float32, copy=True) for k, v in params.items()}
  option = int(rng.choice(CAE_WEIGHT_OPTIONS))
  layers = CAE_OPTION_LAYERS[option]
  i, j = (int(rng.choice(layers)) for _ in range(2))
  cae_weight_option(p, option, i, j, rng)
  return {k: np.ascontiguousarray(v, np.float32) for k, v in p.items()}


def _identity_mixing(c):
  """z[j, j, 1, 1] = 1: the identity 3x3 convolution of c channels (OIHW)."""
  z = np.zeros((c, c, 3, 3), np.float32)
  z[np.arange(c), np.arange(c), 1, 1] = 1
  return z


def cae_latent_distortion(rng, channels, option=None):
  """(latent, scale_code) for DeepAugmentCAE.apply: option `option` (drawn from 0-8 when
  None) of the reference's `CAE.forward`. Position masks are drawn per image (the reference
  runs one image per forward pass; it draws one [H, W] mask, shared by the channels)."""
  option = int(rng.choice(CAE_LATENT_OPTIONS)) if option is None else option
  seed = [int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2)]
  positions = lambda h: tf.random.stateless_uniform(tf.concat([tf.shape(h)[:3], [1]], 0), seed)
  conv = lambda z: (lambda h: tf.nn.conv2d(h, np.transpose(z, (2, 3, 1, 0)), 1, "SAME"))
  if option == 0:  # encoded * (3 + 2 u (2 rand)): after the binarisation
    u = np.float32(rng.uniform())
    return None, lambda e: 3 + 2 * u * (2 * tf.random.stateless_uniform(tf.shape(e), seed))
  if option == 1:  # zero a code position with probability 0.2
    return (lambda h: h * tf.cast(positions(h) > 0.2, h.dtype)), None
  if option == 2:  # negate it with probability 0.1
    return (lambda h: h * (tf.cast(positions(h) > 0.1, h.dtype) * 2 - 1)), None
  if option == 3:  # permute the first 10 channels
    perm = np.concatenate([rng.permutation(10), np.arange(10, channels)])
    return (lambda h: tf.gather(h, perm, axis=-1)), None
  if option in (4, 5):
    # _dims: two of (batch, H, W) of ec3[:, channel]; the batch flip is void for the
    # reference's one image per pass, so only H and W count here.
    dims = [int(d) for d in rng.permutation(3)[:2]]
    axes = [d for d in dims if d != 0]  # NCHW channel slice [B, H, W] -> NHWC axes 1, 2
    if option == 4:  # five channels drawn with replacement, each flip undoing a repeated one
      flips = np.zeros(channels, int)
      for c in rng.integers(channels, size=5):
        flips[c] += 1
      chosen = (flips % 2 == 1)
    else:  # every channel (the order swap at C / 2 does not change a flip)
      chosen = np.ones(channels, bool)
    return (lambda h: tf.where(chosen, tf.reverse(h, axes), h)), None
  z = _identity_mixing(channels)
  if option == 6:  # identity plus U(-0.1, 0.1) everywhere
    z = z + (rng.uniform(size=z.shape).astype(np.float32) - 0.5) * 0.2
  elif option == 7:  # a second tap at a random channel and offset, with probability 0.5
    for j in range(channels):
      if rng.uniform() < 0.5:
        other = rng.integers(channels)
        dx, dy = rng.integers(-1, 2, size=2)  # random.randint(-1, 1); index -1 is the last
        z[j, other, dx % 3, dy % 3] = 1
  elif option == 8:  # a shifted identity; the shift re-drawn per channel with prob. 0.2
    z = np.zeros_like(z)
    sx, sy = rng.integers(3, size=2)
    for j in range(channels):
      if rng.uniform() < 0.2:
        sx, sy = rng.integers(3, size=2)
      z[j, j, sx, sy] = 1
  return conv(z), None


def distort_group(network, params, rng):
  """(distorted params, apply kwargs) of one draw for `network`."""
  if isinstance(network, networks.DeepAugmentCAE):
    latent, scale = cae_latent_distortion(rng, params["e_conv_3/kernel"].shape[-1])
    seed = tf.constant(rng.integers(0, 2 ** 31 - 1, size=2), tf.int32)
    return cae_distort_weights(params, rng), dict(seed=seed, latent=latent, scale_code=scale)
  distorted = distort_weights(params, network.residual_blocks(), rng)
  if isinstance(network, (networks.EDSRBaselineX4, networks.EDSRCifar)):
    pre, mid, skip = activation_distortions(rng, network.num_blocks)
    return distorted, dict(pre=pre, mid=mid, skip=skip)
  return distorted, {}


def to_uint8(images):
  """As torchvision's to_pil_image after the reference's clamp: x * 255, truncated."""
  return np.floor(np.clip(images, 0, 1) * 255).astype(np.uint8)


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
    params, kwargs = distort_group(self.network, self.params, rng)
    out = self.network.apply(params, tf.constant(x, tf.float32) / 255., **kwargs)
    out = tf.where(tf.math.is_finite(out), out, 0.)  # a zeroed/negated net may give NaN
    return to_uint8(out.numpy())

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
  cae = isinstance(network, networks.DeepAugmentCAE)
  meta = dict(kind="deepaugment", network=type(network).__name__, num_copies=num_copies,
              num_examples=total, seed=seed, images_per_draw=images_per_draw, shards=names,
              weight_options=list(CAE_WEIGHT_OPTIONS if cae else WEIGHT_OPTIONS))
  fileio.atomic_write_text(os.path.join(folder, writer.METADATA_FILE),
                           json.dumps(meta, indent=2) + "\n")
  return names
