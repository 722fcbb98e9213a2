"""Corruption networks of seed 003 (Calian et al. 2022, Sec. 2): image-to-image models whose
weights AdA perturbs and DeepAugment distorts. Two are the published networks DeepAugment
(Hendrycks et al. 2020a; hendrycks/imagenet-r `DeepAugment/`) and AdA perturb; two are rgd's
own, trained on CIFAR-10 by `rgd.train_corruption_net`, for when the published weights are not
at hand:

  * `edsr_baseline_x4` (`EDSRBaselineX4`): EDSR-baseline x4 (Lim et al. 2017) as EDSR-PyTorch
    builds it for `EDSR_distort_imagenet.py`: MeanShift with the DIV2K mean (rgb range 255), a
    head conv, 16 residual blocks of 64 features (res_scale 1), a body conv, the x4 upsampler
    (twice conv 64 -> 256 and PixelShuffle(2)) and a tail conv. Its output is 4x the input; rgd
    averages it back over 4x4 windows (`downsample`) so that AdA compares images of one size.
  * `deepaugment_cae` (`DeepAugmentCAE`): `cae_32x32x32_zero_pad_bin.py`: two 5x5 stride-2
    convs, 3 residual blocks, a 32-channel tanh code with stochastic binarisation, and a decoder
    of valid convs and 2x2 transposed convs. Same output size as its input (a multiple of 4).
  * `edsr_cifar` (`EDSRCifar`): EDSR-baseline without the upsampler, mid-grey mean shift,
    trained by rgd to reconstruct CIFAR-10.
  * `cae_cifar` (`CAECifar`): rgd's compressive autoencoder after Theis et al. 2017 (three
    stride-2 convs, a 96-channel rounded code), trained by rgd to reconstruct CIFAR-10.

The networks are *functional*: `net.init(seed)` gives a dict name -> weight (one entry per
kernel and per bias, the blocks AdA gives separate radii), `net.apply(params, x)` runs it on
[0, 1] images. A param may carry a leading group axis [G, ...]: group g's weights then act on
the g-th of G equal slices of the batch, which is how AdA gives each example (G = batch) its
own corrupted network in one pass (`conv2d` below: patches times per-group kernels).
`from_torch_state` maps a PyTorch state dict (as numpy arrays) of the published networks onto
these names; tools/convert_corruption_net.py reads the `.pt` files.
"""
import io

import numpy as np
import tensorflow as tf

from rgd.errors import ConfigError, DataError
from rgd.runtime import fileio

# EDSR-PyTorch `model/common.py` MeanShift: rgb_mean=(0.4488, 0.4371, 0.4040) (the DIV2K
# mean), rgb_std 1, rgb_range 255 as `EDSR_distort_imagenet.py` builds EDSR (line 73).
DIV2K_RGB_MEAN = np.array([0.4488, 0.4371, 0.4040], np.float32)
RGB_RANGE = 255.0
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, used by the DeepAugment CAE


def conv2d(x, kernel, bias, stride=1, padding="SAME"):
  """Conv of x [B, H, W, C]; kernel [k, k, C, O] or per group [G, k, k, C, O] (B = G * n),
  bias [O] or [G, O]; padding "SAME" or "VALID"."""
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  bias = tf.convert_to_tensor(bias, tf.float32)
  if kernel.shape.rank == 4:
    return tf.nn.conv2d(x, kernel, stride, padding) + bias
  if kernel.shape[0] == 1:  # one group: a plain (cuDNN) convolution
    return tf.nn.conv2d(x, kernel[0], stride, padding) + bias[0]
  g, k, _, c, o = kernel.shape
  patches = tf.image.extract_patches(x, [1, k, k, 1], [1, stride, stride, 1], [1, 1, 1, 1],
                                     padding)  # [B, H', W', k*k*C] in (row, col, channel) order
  shape = tf.shape(patches)
  patches = tf.reshape(patches, [g, -1, shape[1], shape[2], k * k * c])
  out = tf.einsum("gnhwp,gpo->gnhwo", patches, tf.reshape(kernel, [g, k * k * c, o]))
  out += bias[:, None, None, None, :]
  return tf.reshape(out, [shape[0], shape[1], shape[2], o])


def deconv2x2(x, kernel, bias):
  """torch.nn.ConvTranspose2d(kernel_size=2, stride=2) of x [B, H, W, C]: every input pixel
  writes one 2x2 output block. kernel [2, 2, C, O] (torch's [C, O, 2, 2] transposed to HWIO
  order) or per group [G, 2, 2, C, O]; bias [O] or [G, O]."""
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  bias = tf.convert_to_tensor(bias, tf.float32)
  shape = tf.shape(x)
  if kernel.shape.rank == 4:
    kernel, bias = kernel[None], bias[None]
  g = kernel.shape[0]
  xg = tf.reshape(x, [g, -1, shape[1], shape[2], x.shape[-1]])
  out = tf.einsum("gnhwc,gijco->gnhiwjo", xg, kernel) + bias[:, None, None, None, None, None]
  o = kernel.shape[-1]
  return tf.reshape(out, [shape[0], 2 * shape[1], 2 * shape[2], o])


def pixel_shuffle(x, r):
  """torch.nn.PixelShuffle(r) in NHWC: input channel c * r * r + i * r + j goes to output
  channel c at (h * r + i, w * r + j). (tf.nn.depth_to_space orders the channels the other
  way, so converted kernels would need a permutation.)"""
  shape = tf.shape(x)
  c = x.shape[-1] // (r * r)
  x = tf.reshape(x, [shape[0], shape[1], shape[2], c, r, r])
  x = tf.transpose(x, [0, 1, 4, 2, 5, 3])  # [B, H, i, W, j, C]
  return tf.reshape(x, [shape[0], shape[1] * r, shape[2] * r, c])


def leaky_relu(x):
  return tf.nn.leaky_relu(x, LEAKY_SLOPE)


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


def _conv_fn(params):
  return lambda name, h, s=1, p="SAME": conv2d(h, params[name + "/kernel"],
                                               params[name + "/bias"], s, p)


def edsr_body(params, head, num_blocks, res_scale, pre=None, mid=None, skip=()):
  """EDSR's body (residual blocks, then `body_out`) plus the long skip, with DeepAugment's
  activation distortions (`EDSR_distort_imagenet.py` `forward`, lines 104-159):
    pre   applied to the head's output, which the long skip then also carries;
    mid   applied after the first five body modules (`self.body[:5]`);
    skip  body module indices (0..num_blocks, num_blocks being `body_out`): the reference's
          loop `res = self.body[i](x)` feeds the head's output to every kept module, so only
          the last kept module counts: `body_out(x)` when it is kept (no residual block at
          all), else residual block j alone on x, for the largest kept j.
  """
  c = _conv_fn(params)
  block = lambda i, h: h + res_scale * c(f"block{i}/conv2", tf.nn.relu(c(f"block{i}/conv1", h)))
  if pre is not None:
    head = pre(head)
  if skip:
    last = max(set(range(num_blocks + 1)) - set(skip))
    res = c("body_out", head) if last == num_blocks else block(last, head)
    return res + head
  h = head
  for i in range(num_blocks):
    if i == 5 and mid is not None:
      h = mid(h)
    h = block(i, h)
  return c("body_out", h) + head


def _edsr_shapes(features, num_blocks, upsample_x4=False):
  """Kernel shapes of EDSR's head, body conv, (x4 upsampler: two conv + pixel-shuffle stages,)
  tail and residual blocks, in the order their initial values are drawn."""
  f = features
  shapes = {"head": (3, 3, 3, f), "body_out": (3, 3, f, f)}
  if upsample_x4:
    shapes.update(upsample0=(3, 3, f, 4 * f), upsample1=(3, 3, f, 4 * f))
  shapes["tail"] = (3, 3, f, 3)
  for i in range(num_blocks):
    shapes[f"block{i}/conv1"] = (3, 3, f, f)
    shapes[f"block{i}/conv2"] = (3, 3, f, f)
  return shapes


class EDSRCifar:
  """rgd's EDSR for CIFAR-10 (not a published network): EDSR-baseline's head, 16 residual
  blocks of 64 features and body conv, a tail conv straight to RGB (no upsampler) and a
  mid-grey mean shift; trained by `rgd.train_corruption_net` (gin/edsr.gin)."""

  def __init__(self, num_blocks=16, features=64, res_scale=1.0):
    self.num_blocks, self.features, self.res_scale = int(num_blocks), int(features), res_scale

  def init(self, seed=0):
    return _init_params(np.random.default_rng(seed), _edsr_shapes(self.features, self.num_blocks))

  def residual_blocks(self):
    return [f"block{i}" for i in range(self.num_blocks)]

  def forward_flops(self, size=32):
    """2 x MACs of one image's forward pass (all convs at full resolution)."""
    f, hw = self.features, size * size
    return 2 * hw * 9 * (3 * f + (2 * self.num_blocks + 1) * f * f + f * 3)

  def apply(self, params, x, pre=None, mid=None, skip=()):
    """`pre`, `mid`, `skip`: DeepAugment's activation distortions (`edsr_body`)."""
    c = _conv_fn(params)
    h = edsr_body(params, c("head", x - 0.5), self.num_blocks, self.res_scale, pre, mid, skip)
    return tf.clip_by_value(c("tail", h) + 0.5, 0.0, 1.0)


class EDSRBaselineX4:
  """EDSR-baseline x4 (Lim et al. 2017) as published (`edsr_baseline_x4.pt`, DIV2K) and as
  DeepAugment runs it: inputs in [0, 1] are scaled to the rgb range 255, the DIV2K mean is
  subtracted (MeanShift, a fixed 1x1 conv: not a weight AdA perturbs), and the output,
  clamped to [0, 255] and divided by 255 as `EDSR_distort_imagenet.py` line 313 does, is 4x the
  input size. With `downsample` (default) rgd averages it over 4x4 windows back to the input
  size (area resizing), which AdA needs; DeepAugment on ImageNet instead resized inputs to 128
  and let the training crops rescale the 512-pixel output."""

  scale = 4

  def __init__(self, num_blocks=16, features=64, res_scale=1.0, downsample=True):
    self.num_blocks, self.features, self.res_scale = int(num_blocks), int(features), res_scale
    self.downsample = bool(downsample)

  def init(self, seed=0):
    return _init_params(np.random.default_rng(seed),
                        _edsr_shapes(self.features, self.num_blocks, upsample_x4=True))

  residual_blocks = EDSRCifar.residual_blocks

  def forward_flops(self, size=32):
    """2 x MACs of one image's forward pass (each conv at its input resolution)."""
    f, hw = self.features, size * size
    macs = hw * 9 * (3 * f + (2 * self.num_blocks + 1) * f * f + f * 4 * f)
    macs += 4 * hw * 9 * f * 4 * f + 16 * hw * 9 * f * 3
    return 2 * macs

  def apply(self, params, x, pre=None, mid=None, skip=()):
    """`pre`, `mid`, `skip`: DeepAugment's activation distortions (`edsr_body`)."""
    c = _conv_fn(params)
    mean = RGB_RANGE * DIV2K_RGB_MEAN
    h = edsr_body(params, c("head", RGB_RANGE * x - mean), self.num_blocks, self.res_scale,
                  pre, mid, skip)
    for j in range(2):  # Upsampler for scale 4 = 2^2: conv to 4 * features, PixelShuffle(2)
      h = pixel_shuffle(c(f"upsample{j}", h), 2)
    out = tf.clip_by_value(c("tail", h) + mean, 0.0, RGB_RANGE) / RGB_RANGE
    if self.downsample:
      out = tf.nn.avg_pool2d(out, self.scale, self.scale, "VALID")
    return out


# The DeepAugment CAE's layers in the reference's order (`CAE_distort_imagenet.py`
# `weight_keys`: 21 layers), rgd's name, the torch module, and whether it is a 2x2 transposed
# conv: DeepAugment's weight distortions pick layers by this index.
CAE_LAYERS = (
    ("e_conv_1", "e_conv_1.1", False), ("e_conv_2", "e_conv_2.1", False),
    ("e_block_1/conv1", "e_block_1.1", False), ("e_block_1/conv2", "e_block_1.4", False),
    ("e_block_2/conv1", "e_block_2.1", False), ("e_block_2/conv2", "e_block_2.4", False),
    ("e_block_3/conv1", "e_block_3.1", False), ("e_block_3/conv2", "e_block_3.4", False),
    ("e_conv_3", "e_conv_3.0", False),
    ("d_up_conv_1/conv", "d_up_conv_1.0", False), ("d_up_conv_1/deconv", "d_up_conv_1.3", True),
    ("d_block_1/conv1", "d_block_1.1", False), ("d_block_1/conv2", "d_block_1.4", False),
    ("d_block_2/conv1", "d_block_2.1", False), ("d_block_2/conv2", "d_block_2.4", False),
    ("d_block_3/conv1", "d_block_3.1", False), ("d_block_3/conv2", "d_block_3.4", False),
    ("d_up_conv_2/conv", "d_up_conv_2.0", False), ("d_up_conv_2/deconv", "d_up_conv_2.3", True),
    ("d_up_conv_3/conv1", "d_up_conv_3.0", False), ("d_up_conv_3/conv2", "d_up_conv_3.3", False))


class DeepAugmentCAE:
  """DeepAugment's compressive autoencoder (`cae_32x32x32_zero_pad_bin.py`): inputs in [0, 1]
  as `CAE_distort_imagenet.py` feeds them, output tanh clamped to [0, 1] (its line 'clamp(0,
  1)'). `features` scales the widths (64, 128, code 32, decoder 64/32/16) for small tests.

  The code is binarised stochastically (+1 with probability (1 + code) / 2) with the gradient
  of the identity, as the reference's `eps` is computed under no_grad. `apply(..., seed=s)`
  draws the binarisation from the int32 [2] seed s; without a seed it is deterministic
  (sign of the code), which the reference never does (docs/corruptions.md). `latent` is a
  function of the code (DeepAugment's latent distortions, rgd.corruptions.deepaugment);
  `scale_code` multiplies the binarised code (its option 0)."""

  stochastic = True

  def __init__(self, widths=(64, 128, 32, 64, 32, 256, 16)):
    # (e_conv_1, e_conv_2 = the residual blocks' width, code, d_up_conv_1's conv, d_up_conv_2's
    # conv, its transposed conv, d_up_conv_3's first conv): the reference's channel counts.
    self.widths = tuple(int(w) for w in widths)

  def init(self, seed=0):
    rng = np.random.default_rng(seed)
    e1, f, code, d1, d2, d2t, d3 = self.widths
    shapes = {"e_conv_1": (5, 5, 3, e1), "e_conv_2": (5, 5, e1, f), "e_conv_3": (5, 5, f, code),
              "d_up_conv_1/conv": (3, 3, code, d1), "d_up_conv_1/deconv": (2, 2, d1, f),
              "d_up_conv_2/conv": (3, 3, f, d2), "d_up_conv_2/deconv": (2, 2, d2, d2t),
              "d_up_conv_3/conv1": (3, 3, d2t, d3), "d_up_conv_3/conv2": (3, 3, d3, 3)}
    for part in ("e", "d"):
      for i in (1, 2, 3):
        shapes[f"{part}_block_{i}/conv1"] = (3, 3, f, f)
        shapes[f"{part}_block_{i}/conv2"] = (3, 3, f, f)
    return _init_params(rng, shapes)

  def residual_blocks(self):
    return [f"{p}_block_{i}" for p in ("e", "d") for i in (1, 2, 3)]

  def layers(self):
    return [name for name, _, _ in CAE_LAYERS]

  def _blocks(self, params, part, h):
    c = _conv_fn(params)
    for i in (1, 2, 3):
      h = h + c(f"{part}_block_{i}/conv2", leaky_relu(c(f"{part}_block_{i}/conv1", h)))
    return h

  def encode(self, params, x):
    """The tanh code [B, H/4, W/4, 32] in [-1, 1]. The reference pads (1, 2) before its 5x5
    stride-2 convs: TF's SAME padding for an even size."""
    c = _conv_fn(params)
    h = leaky_relu(c("e_conv_1", x, 2))
    h = leaky_relu(c("e_conv_2", h, 2))
    return tf.tanh(c("e_conv_3", self._blocks(params, "e", h)))

  def binarize(self, code, seed=None):
    if seed is None:
      bits = tf.where(code >= 0, 1.0, -1.0)
    else:
      u = tf.random.stateless_uniform(tf.shape(code), seed)
      bits = tf.where(u <= (1 + code) / 2, 1.0, -1.0)
    return 0.5 * (code + tf.stop_gradient(bits - code) + 1)  # (-1|1) -> (0|1)

  def decode(self, params, encoded):
    c = _conv_fn(params)
    pad = lambda h, mode="CONSTANT", p=1: tf.pad(h, [[0, 0], [p, p], [p, p], [0, 0]], mode)
    deconv = lambda name, h: deconv2x2(h, params[name + "/kernel"], params[name + "/bias"])
    h = leaky_relu(c("d_up_conv_1/conv", encoded * 2.0 - 1, 1, "VALID"))
    h = deconv("d_up_conv_1/deconv", pad(h))
    h = self._blocks(params, "d", h)
    h = deconv("d_up_conv_2/deconv", pad(leaky_relu(c("d_up_conv_2/conv", h, 1, "VALID"))))
    h = leaky_relu(c("d_up_conv_3/conv1", h, 1, "VALID"))
    return tf.tanh(c("d_up_conv_3/conv2", pad(h, "REFLECT", 2), 1, "VALID"))

  def apply(self, params, x, seed=None, latent=None, scale_code=None):
    code = self.encode(params, x)
    if latent is not None:
      code = latent(code)
    encoded = self.binarize(code, seed)
    if scale_code is not None:
      encoded = encoded * scale_code(encoded)
    return tf.clip_by_value(self.decode(params, encoded), 0.0, 1.0)


class CAECifar:
  """rgd's compressive autoencoder for 32x32 images (not a published network; after Theis et
  al. 2017): three stride-2 5x5 convs (64, 128, then the code) around three residual blocks of
  128 features, a code [H/8, W/8, 96] rounded with the straight-through gradient, and a
  mirrored sub-pixel decoder; trained by `rgd.train_corruption_net` (gin/cae.gin)."""

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
    c = _conv_fn(params)
    for i in range(self.num_blocks):
      h = h + c(f"{part}_block{i}/conv2", tf.nn.leaky_relu(c(f"{part}_block{i}/conv1", h), 0.2))
    return h

  def apply(self, params, x):
    c = _conv_fn(params)
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


NETWORKS = {"edsr_baseline_x4": EDSRBaselineX4, "deepaugment_cae": DeepAugmentCAE,
            "edsr_cifar": EDSRCifar, "cae_cifar": CAECifar}
# Names rgd's small CIFAR networks once had. 'edsr' and 'cae' read as the published EDSR and
# CAE, which they are not, so old configs stop with the new name rather than load the wrong net.
RENAMED = {"edsr": "edsr_cifar", "cae": "cae_cifar"}


def get_network(name, **kwargs):
  if name in RENAMED:
    raise ConfigError(f"Corruption network {name!r} is now {RENAMED[name]!r} (rgd's CIFAR-10 "
                      f"network); the published ones are 'edsr_baseline_x4' and "
                      f"'deepaugment_cae'")
  if name not in NETWORKS:
    raise ConfigError(f"Unknown corruption network {name!r}; expected one of {sorted(NETWORKS)}")
  return NETWORKS[name](**kwargs)


def save_params(path, params):
  """Weights as an npz (written through tf.io.gfile, atomically)."""
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})
  fileio.atomic_write_bytes(path, buf.getvalue())


def load_params(path, network, seed=0):
  """Weights from an npz written by `save_params` (rgd.train_corruption_net, or
  tools/convert_corruption_net.py from the published PyTorch files); the names and shapes must
  match `network.init()`."""
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"corruption network weights: no file {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = np.load(io.BytesIO(f.read()), allow_pickle=False)
    loaded = {k: raw[k] for k in raw.files}
  expected = network.init(seed)
  missing = sorted(set(expected) - set(loaded))
  extra = sorted(set(loaded) - set(expected))
  if missing or extra:
    raise DataError(f"{path}: weights do not match {type(network).__name__}: missing "
                    f"{missing[:5]}, unexpected {extra[:5]}")
  for k, v in expected.items():
    if loaded[k].shape != v.shape:
      raise DataError(f"{path}: {k} has shape {loaded[k].shape}, expected {v.shape}")
  return {k: loaded[k].astype(np.float32) for k in expected}


def _oihw_to_hwio(w):
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32)


def _take(state, key, source):
  if key not in state:
    raise DataError(f"{source}: no {key!r} in the state dict (keys: {sorted(state)[:8]} ...)")
  return np.asarray(state[key], np.float32)


def _edsr_from_torch(state, source):
  """EDSR-PyTorch names (`model/edsr.py`: head.0, body.{i}.body.{0,2}, body.{n}, tail.0.{0,2}
  for the x4 upsampler's convs, tail.1) -> EDSRBaselineX4's."""
  n = sum(1 for k in state if k.startswith("body.") and k.endswith(".body.0.weight"))
  params = {}
  names = {"head": "head.0", "body_out": f"body.{n}", "upsample0": "tail.0.0",
           "upsample1": "tail.0.2", "tail": "tail.1"}
  for i in range(n):
    names[f"block{i}/conv1"] = f"body.{i}.body.0"
    names[f"block{i}/conv2"] = f"body.{i}.body.2"
  for ours, theirs in names.items():
    params[ours + "/kernel"] = _oihw_to_hwio(_take(state, theirs + ".weight", source))
    params[ours + "/bias"] = _take(state, theirs + ".bias", source)
  # MeanShift is fixed, not learned: rgd builds it from the DIV2K mean; check the file agrees.
  for key, sign in (("sub_mean", -1), ("add_mean", 1)):
    if key + ".bias" in state:
      bias = _take(state, key + ".bias", source)
      weight = _take(state, key + ".weight", source).reshape(3, 3)
      if not (np.allclose(bias, sign * RGB_RANGE * DIV2K_RGB_MEAN, atol=1e-3)
              and np.allclose(weight, np.eye(3), atol=1e-6)):
        raise DataError(f"{source}: {key} is not EDSR's DIV2K MeanShift (bias {bias})")
  kwargs = {"num_blocks": n, "features": params["head/kernel"].shape[-1]}
  return kwargs, params


def _cae_from_torch(state, source):
  """`cae_32x32x32_zero_pad_bin.py` names (CAE_LAYERS) -> DeepAugmentCAE's."""
  params = {}
  for ours, theirs, transposed in CAE_LAYERS:
    w = _take(state, theirs + ".weight", source)
    # ConvTranspose2d stores [in, out, kh, kw]; Conv2d [out, in, kh, kw].
    params[ours + "/kernel"] = np.ascontiguousarray(
        np.transpose(w, (2, 3, 0, 1)) if transposed else np.transpose(w, (2, 3, 1, 0)),
        np.float32)
    params[ours + "/bias"] = _take(state, theirs + ".bias", source)
  k = lambda name: params[name + "/kernel"].shape[-1]
  widths = (k("e_conv_1"), k("e_conv_2"), k("e_conv_3"), k("d_up_conv_1/conv"),
            k("d_up_conv_2/conv"), k("d_up_conv_2/deconv"), k("d_up_conv_3/conv1"))
  return {"widths": widths}, params


def from_torch_state(name, state, source="state dict"):
  """(network kwargs, params) of network `name` ('edsr_baseline_x4' or 'deepaugment_cae') from
  a PyTorch state dict given as {key: numpy array}; ValueError naming `source` when it is not
  one. Kernels go from OIHW to HWIO; nothing else changes (PixelShuffle keeps torch's channel
  order in `pixel_shuffle`)."""
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
  if name == "edsr_baseline_x4":
    kwargs, params = _edsr_from_torch(state, source)
  elif name == "deepaugment_cae":
    kwargs, params = _cae_from_torch(state, source)
  else:
    raise ConfigError(f"no PyTorch layout for corruption network {name!r}; expected "
                      f"'edsr_baseline_x4' or 'deepaugment_cae'")
  expected = NETWORKS[name](**kwargs).init(0)
  for k, v in expected.items():
    if params[k].shape != v.shape:
      raise DataError(f"{source}: {k} has shape {params[k].shape}, expected {v.shape} for "
                      f"{name} {kwargs}")
  return kwargs, params
