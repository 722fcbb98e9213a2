"""Corruption networks of seed 003 (Calian et al. 2022, Sec. 2): image-to-image models whose
weights AdA perturbs. Both are the networks DeepAugment used (Hendrycks et al. 2020a):

  * `edsr`: the EDSR super-resolution backbone (Lim et al. 2017), "EDSR-baseline" size: 16
    residual blocks of two 3x3 convs with 64 features, a head and a tail conv. rgd keeps the
    input resolution (no pixel-shuffle upsampler): AdA needs an image of the same size.
  * `cae`: the compressive autoencoder of Theis et al. 2017: three stride-2 5x5 convs (64, 128,
    then the code) around three residual blocks of 128 features, a code rounded with the
    straight-through gradient Theis et al. use, and a mirrored sub-pixel decoder.

The networks are *functional*: `net.init(seed)` gives a dict name -> weight (one entry per
kernel and per bias, the blocks AdA gives separate radii), `net.apply(params, x)` runs it. A
param may carry a leading group axis [G, ...]: group g's weights then act on the g-th of G
equal slices of the batch, which is how AdA gives each example (G = batch) its own corrupted
network in one pass (`conv2d` below: patches times per-group kernels).
"""
import numpy as np
import tensorflow as tf


def conv2d(x, kernel, bias, stride=1):
  """SAME conv of x [B, H, W, C]; kernel [k, k, C, O] or per group [G, k, k, C, O] (B = G * n),
  bias [O] or [G, O]."""
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  bias = tf.convert_to_tensor(bias, tf.float32)
  if kernel.shape.rank == 4:
    return tf.nn.conv2d(x, kernel, stride, "SAME") + bias
  if kernel.shape[0] == 1:  # one group: a plain (cuDNN) convolution
    return tf.nn.conv2d(x, kernel[0], stride, "SAME") + bias[0]
  g, k, _, c, o = kernel.shape
  patches = tf.image.extract_patches(x, [1, k, k, 1], [1, stride, stride, 1], [1, 1, 1, 1],
                                     "SAME")  # [B, H', W', k*k*C] in (row, col, channel) order
  shape = tf.shape(patches)
  patches = tf.reshape(patches, [g, -1, shape[1], shape[2], k * k * c])
  out = tf.einsum("gnhwp,gpo->gnhwo", patches, tf.reshape(kernel, [g, k * k * c, o]))
  out += bias[:, None, None, None, :]
  return tf.reshape(out, [shape[0], shape[1], shape[2], o])


def _init_params(rng, shapes):
  """He-initialised kernels and zero biases for {name: kernel shape}. The second conv of a
  residual block starts small (0.1) so that the block starts near the identity."""
  params = {}
  for name, shape in shapes.items():
    params[name + "/kernel"] = _he(rng, shape, 0.1 if name.endswith("conv2") else 1.0)
    params[name + "/bias"] = np.zeros(shape[-1], np.float32)
  return params


def _he(rng, shape, scale=1.0):
  fan_in = np.prod(shape[:-1])
  return (rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)


def round_ste(x):
  """Rounding with the identity gradient (Theis et al. 2017, Sec. 2.1)."""
  return x + tf.stop_gradient(tf.round(x) - x)


class EDSR:
  """EDSR backbone; `num_blocks`, `features` default to EDSR-baseline (Lim et al. 2017)."""

  def __init__(self, num_blocks=16, features=64, res_scale=1.0):
    self.num_blocks, self.features, self.res_scale = int(num_blocks), int(features), res_scale

  def init(self, seed=0):
    rng = np.random.default_rng(seed)
    f = self.features
    shapes = {"head": (3, 3, 3, f), "body_out": (3, 3, f, f), "tail": (3, 3, f, 3)}
    for i in range(self.num_blocks):
      shapes[f"block{i}/conv1"] = (3, 3, f, f)
      shapes[f"block{i}/conv2"] = (3, 3, f, f)
    return _init_params(rng, shapes)

  def residual_blocks(self):
    return [f"block{i}" for i in range(self.num_blocks)]

  def forward_flops(self, size=32):
    """2 x MACs of one image's forward pass (all convs at full resolution)."""
    f, hw = self.features, size * size
    return 2 * hw * 9 * (3 * f + (2 * self.num_blocks + 1) * f * f + f * 3)

  def apply(self, params, x, pre=None, mid=None, skip=()):
    """`pre`, `mid` (functions of the features) and `skip` (block indices) are DeepAugment's
    activation distortions: after the head, after the fifth body module, blocks left out."""
    c = lambda name, h, s=1: conv2d(h, params[name + "/kernel"], params[name + "/bias"], s)
    # Mean shift of EDSR with the mid-grey mean: inputs and outputs in [0, 1].
    head = c("head", x - 0.5)
    if pre is not None:
      head = pre(head)
    h = head
    for i in range(self.num_blocks):
      if i == 5 and mid is not None:
        h = mid(h)
      if i in skip:
        continue
      r = c(f"block{i}/conv2", tf.nn.relu(c(f"block{i}/conv1", h)))
      h = h + self.res_scale * r
    h = c("body_out", h) + head
    return tf.clip_by_value(c("tail", h) + 0.5, 0.0, 1.0)


class CAE:
  """Compressive autoencoder (Theis et al. 2017) for 32x32 images: code [H/8, W/8, code]."""

  def __init__(self, features=(64, 128), num_blocks=3, code_channels=96):
    self.f1, self.f2 = (int(f) for f in features)
    self.num_blocks, self.code = int(num_blocks), int(code_channels)

  def init(self, seed=0):
    rng = np.random.default_rng(seed)
    f1, f2, code = self.f1, self.f2, self.code
    shapes = {"enc1": (5, 5, 3, f1), "enc2": (5, 5, f1, f2), "enc3": (5, 5, f2, code),
              # Sub-pixel decoder: conv to 4x the channels, then depth_to_space(2).
              "dec1": (3, 3, code, 4 * f2), "dec2": (3, 3, f2, 4 * f1), "dec3": (3, 3, f1, 4 * 3)}
    for part in ("enc", "dec"):
      for i in range(self.num_blocks):
        shapes[f"{part}_block{i}/conv1"] = (3, 3, f2, f2)
        shapes[f"{part}_block{i}/conv2"] = (3, 3, f2, f2)
    return _init_params(rng, shapes)

  def residual_blocks(self):
    return [f"{p}_block{i}" for p in ("enc", "dec") for i in range(self.num_blocks)]

  def forward_flops(self, size=32):
    """2 x MACs of one image's forward pass (each conv at its output resolution)."""
    f1, f2, code = self.f1, self.f2, self.code
    px = lambda d: (size // d) ** 2
    macs = (px(2) * 25 * 3 * f1 + px(4) * 25 * f1 * f2 + px(8) * 25 * f2 * code
            + 2 * self.num_blocks * 2 * px(4) * 9 * f2 * f2
            + px(8) * 9 * code * 4 * f2 + px(4) * 9 * f2 * 4 * f1 + px(2) * 9 * f1 * 12)
    return 2 * macs

  def _blocks(self, params, part, h):
    c = lambda name, h: conv2d(h, params[name + "/kernel"], params[name + "/bias"])
    for i in range(self.num_blocks):
      h = h + c(f"{part}_block{i}/conv2", tf.nn.leaky_relu(c(f"{part}_block{i}/conv1", h), 0.2))
    return h

  def apply(self, params, x):
    c = lambda name, h, s=1: conv2d(h, params[name + "/kernel"], params[name + "/bias"], s)
    act = lambda h: tf.nn.leaky_relu(h, 0.2)
    h = act(c("enc1", x - 0.5, 2))
    h = act(c("enc2", h, 2))
    h = self._blocks(params, "enc", h)
    code = round_ste(c("enc3", h, 2))
    h = tf.nn.depth_to_space(c("dec1", code), 2)
    h = self._blocks(params, "dec", act(h))
    h = act(tf.nn.depth_to_space(c("dec2", h), 2))
    h = tf.nn.depth_to_space(c("dec3", h), 2)
    return tf.clip_by_value(h + 0.5, 0.0, 1.0)


NETWORKS = {"edsr": EDSR, "cae": CAE}


def get_network(name, **kwargs):
  if name not in NETWORKS:
    raise ValueError(f"Unknown corruption network {name!r}; expected one of {sorted(NETWORKS)}")
  return NETWORKS[name](**kwargs)


def save_params(path, params):
  """Weights as an npz (written through tf.io.gfile, atomically)."""
  import io  # pylint: disable=g-import-not-at-top
  from rgd.runtime import fileio  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})
  fileio.atomic_write_bytes(path, buf.getvalue())


def load_params(path, network, seed=0):
  """Weights from an npz written by `save_params` (or converted from DeepAugment's PyTorch
  checkpoints, docs/corruptions.md); the names and shapes must match `network.init()`."""
  import io  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"corruption network weights: no file {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = np.load(io.BytesIO(f.read()), allow_pickle=False)
    loaded = {k: raw[k] for k in raw.files}
  expected = network.init(seed)
  missing = sorted(set(expected) - set(loaded))
  extra = sorted(set(loaded) - set(expected))
  if missing or extra:
    raise ValueError(f"{path}: weights do not match {type(network).__name__}: missing "
                     f"{missing[:5]}, unexpected {extra[:5]}")
  for k, v in expected.items():
    if loaded[k].shape != v.shape:
      raise ValueError(f"{path}: {k} has shape {loaded[k].shape}, expected {v.shape}")
  return {k: loaded[k].astype(np.float32) for k in expected}
