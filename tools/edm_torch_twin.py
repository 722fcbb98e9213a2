#!/usr/bin/env python
"""A PyTorch twin of rgd.edm.unet (DDPM++, SongUNet of NVlabs/edm `training/networks.py` as
`train.py --arch=ddpmpp --cond=1` builds it), written for rgd from reading networks.py, and a
cross-check of the two on the same weights.

  python tools/edm_torch_twin.py                       # small config: max |D_keras - D_torch|
  python tools/edm_torch_twin.py --seed_bug=adaptive_scale   # must FAIL
  python tools/edm_torch_twin.py --count_cifar10       # parameters of the CIFAR-10 cond model

Developer tool: needs torch (CPU is enough); rgd does not depend on it. The module paths of the
twin are SongUNet's (`enc['16x16_block0'].conv0`), and rgd's Keras layers carry the same paths
with '.' -> '_', so `copy_keras_weights` maps them one to one. The twin is NCHW as networks.py,
so the comparison also checks rgd's NHWC layout (qkv channel order, concatenation order).

BUGS are mistakes that can be planted in the twin (`--seed_bug`) to show that the check finds
them; each keeps the weights' shapes, so the same weights load.
"""
import argparse
import math
import os
import sys

import numpy as np
import tensorflow as tf
import torch
import torch.nn.functional as tnf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rgd import cli  # noqa: E402
from rgd.edm import denoiser, unet  # noqa: E402
from rgd.errors import ConfigError  # noqa: E402

BUGS = {
    "adaptive_scale": "the embedding scales norm1's output (adaptive_scale on, shift left out so "
                      "the weights fit) instead of being added before norm1",
    "label_scale": "class labels enter map_label without the sqrt(label_dim) factor",
    "sin_cos": "noise embedding halves not swapped ([cos, sin] instead of [sin, cos])",
    "qkv_blocks": "q, k, v read as contiguous thirds of qkv instead of interleaved channels",
}


class _Dense(torch.nn.Module):
  def __init__(self, fan_in, fan_out, bias=True):
    super().__init__()
    self.weight = torch.nn.Parameter(torch.zeros(fan_out, fan_in))
    self.bias = torch.nn.Parameter(torch.zeros(fan_out)) if bias else None

  def forward(self, x):
    return tnf.linear(x, self.weight, self.bias)


class _Conv(torch.nn.Module):
  """A conv with 'same' padding and an optional 2x resample before it (the [1, 1] filter)."""
  def __init__(self, cin, cout, kernel, resample=None):
    super().__init__()
    self.weight = torch.nn.Parameter(torch.zeros(cout, cin, kernel, kernel))
    self.bias = torch.nn.Parameter(torch.zeros(cout))
    self.resample = resample

  def forward(self, x):
    if self.resample == "down":     # [1,1] x [1,1] / 4 filter, stride 2
      x = tnf.avg_pool2d(x, 2)
    elif self.resample == "up":     # transposed conv with ones(2, 2), stride 2
      x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return tnf.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class _Norm(torch.nn.Module):
  def __init__(self, ch):
    super().__init__()
    self.groups = min(32, ch // 4)   # networks.py GroupNorm: min(32, ch // 4 channels per group)
    self.weight = torch.nn.Parameter(torch.ones(ch))
    self.bias = torch.nn.Parameter(torch.zeros(ch))

  def forward(self, x):
    return tnf.group_norm(x, self.groups, self.weight, self.bias, eps=1e-6)


class Block(torch.nn.Module):
  """UNetBlock(adaptive_scale=False, num_heads=1, skip_scale=sqrt(0.5), resample_proj=True)."""
  def __init__(self, cin, cout, emb_ch, attention=False, resample=None, bug=None):
    super().__init__()
    self.bug = bug
    self.norm0 = _Norm(cin)
    self.conv0 = _Conv(cin, cout, 3, resample)
    self.affine = _Dense(emb_ch, cout)
    self.norm1 = _Norm(cout)
    self.conv1 = _Conv(cout, cout, 3)
    self.skip = _Conv(cin, cout, 1, resample) if (cin != cout or resample) else None
    self.attention = attention
    if attention:
      self.norm2 = _Norm(cout)
      self.qkv = _Conv(cout, 3 * cout, 1)
      self.proj = _Conv(cout, cout, 1)

  def forward(self, x, emb):
    h = self.conv0(tnf.silu(self.norm0(x)))
    p = self.affine(emb)[:, :, None, None]
    if self.bug == "adaptive_scale":
      h = tnf.silu(self.norm1(h) * (p + 1))
    else:
      h = tnf.silu(self.norm1(h + p))
    h = self.conv1(h)   # dropout: the twin runs in inference only
    x = (h + (self.skip(x) if self.skip is not None else x)) * math.sqrt(0.5)
    if self.attention:
      n, c, hh, ww = x.shape
      qkv = self.qkv(self.norm2(x))
      if self.bug == "qkv_blocks":
        q, k, v = qkv.reshape(n, 3, c, hh * ww).unbind(1)
      else:
        q, k, v = qkv.reshape(n, c, 3, hh * ww).unbind(2)
      w = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(c), dim=2)
      a = torch.einsum("nqk,nck->ncq", w, v).reshape(n, c, hh, ww)
      x = (self.proj(a) + x) * math.sqrt(0.5)
    return x


class SongUNetTwin(torch.nn.Module):
  """SongUNet(ddpmpp): F(x, c_noise, class_labels, augment_labels) in NCHW."""
  def __init__(self, resolution=32, channels=3, label_dim=10, augment_dim=9, model_channels=128,
               channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), bug=None):
    super().__init__()
    if bug is not None and bug not in BUGS:
      raise ConfigError(f"--seed_bug: {bug!r} is not one of {sorted(BUGS)}")
    self.bug, self.mc, self.label_dim = bug, model_channels, label_dim
    emb_ch = 4 * model_channels
    self.map_label = _Dense(label_dim, model_channels) if label_dim else None
    self.map_augment = _Dense(augment_dim, model_channels, bias=False) if augment_dim else None
    self.map_layer0 = _Dense(model_channels, emb_ch)
    self.map_layer1 = _Dense(emb_ch, emb_ch)
    blk = lambda cin, cout, **kw: Block(cin, cout, emb_ch, bug=bug, **kw)
    self.enc = torch.nn.ModuleDict()
    widths = []
    ch = channels
    for level, mult in enumerate(channel_mult):
      r = resolution >> level
      if level == 0:
        self.enc[f"{r}x{r}_conv"] = _Conv(ch, model_channels, 3)
        ch = model_channels
      else:
        self.enc[f"{r}x{r}_down"] = blk(ch, ch, resample="down")
      widths.append(ch)
      for i in range(num_blocks):
        self.enc[f"{r}x{r}_block{i}"] = blk(ch, model_channels * mult,
                                            attention=r in attn_resolutions)
        ch = model_channels * mult
        widths.append(ch)
    self.dec = torch.nn.ModuleDict()
    for level in reversed(range(len(channel_mult))):
      r = resolution >> level
      if level == len(channel_mult) - 1:
        self.dec[f"{r}x{r}_in0"] = blk(ch, ch, attention=True)
        self.dec[f"{r}x{r}_in1"] = blk(ch, ch)
      else:
        self.dec[f"{r}x{r}_up"] = blk(ch, ch, resample="up")
      for i in range(num_blocks + 1):
        cin = ch + widths.pop()
        ch = model_channels * channel_mult[level]
        self.dec[f"{r}x{r}_block{i}"] = blk(
            cin, ch, attention=i == num_blocks and r in attn_resolutions)
    self.dec[f"{resolution}x{resolution}_aux_norm"] = _Norm(ch)
    self.dec[f"{resolution}x{resolution}_aux_conv"] = _Conv(ch, channels, 3)

  def embedding(self, c_noise, class_labels, augment_labels):
    half = self.mc // 2
    freqs = (1.0 / 10000) ** (torch.arange(half, dtype=torch.float32) / (half - 1))
    arg = c_noise[:, None] * freqs[None]
    if self.bug == "sin_cos":
      emb = torch.cat([arg.cos(), arg.sin()], 1)
    else:
      emb = torch.cat([arg.sin(), arg.cos()], 1)
    if self.map_label is not None:
      factor = 1.0 if self.bug == "label_scale" else math.sqrt(self.label_dim)
      emb = emb + self.map_label(class_labels * factor)
    if self.map_augment is not None and augment_labels is not None:
      emb = emb + self.map_augment(augment_labels)
    return tnf.silu(self.map_layer1(tnf.silu(self.map_layer0(emb))))

  def forward(self, x, c_noise, class_labels, augment_labels=None):
    emb = self.embedding(c_noise, class_labels, augment_labels)
    skips = []
    for block in self.enc.values():
      x = block(x, emb) if isinstance(block, Block) else block(x)
      skips.append(x)
    for name, block in self.dec.items():
      if name.endswith("aux_norm"):
        x = tnf.silu(block(x))
      elif name.endswith("aux_conv"):
        x = block(x)
      else:
        if "_block" in name:
          x = torch.cat([x, skips.pop()], 1)
        x = block(x, emb)
    return x


def edm_denoise(net, x, sigma, class_labels, augment_labels=None, sigma_data=0.5):
  """EDMPrecond.forward: D = c_skip x + c_out F(c_in x, ln(sigma) / 4) (NCHW, float32)."""
  s = sigma.reshape(-1, 1, 1, 1)
  c_skip = sigma_data ** 2 / (s ** 2 + sigma_data ** 2)
  c_out = s * sigma_data / (s ** 2 + sigma_data ** 2).sqrt()
  c_in = 1 / (sigma_data ** 2 + s ** 2).sqrt()
  return c_skip * x + c_out * net(c_in * x, (s.log() / 4).flatten(), class_labels, augment_labels)


def copy_keras_weights(keras_model, net):
  """Copies every weight of rgd's U-Net into the twin (Dense [in, out] -> [out, in], Conv2D
  [kh, kw, in, out] -> [out, in, kh, kw], GroupNorm gamma/beta -> weight/bias). Raises if a
  parameter of either side is left over."""
  params = dict(net.named_parameters())
  # rgd's layer name is the twin's module path with '.' -> '_'.
  modules = {path.rsplit(".", 1)[0].replace(".", "_"): path.rsplit(".", 1)[0] for path in params}
  done = set()
  for layer in keras_model.layers:
    for var in layer.weights:
      kind = {"kernel": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}[
          var.path.split("/")[-1]]
      key = f"{modules.get(layer.name, layer.name)}.{kind}"
      if key not in params:
        raise KeyError(f"Keras weight {var.path} has no twin parameter {key}")
      value = np.asarray(var.numpy())
      value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1) if value.ndim == 4 \
          else value
      if tuple(params[key].shape) != value.shape:
        raise ValueError(f"{key}: twin {tuple(params[key].shape)} vs Keras {value.shape}")
      with torch.no_grad():
        params[key].copy_(torch.from_numpy(np.ascontiguousarray(value)))
      done.add(key)
  missing = sorted(set(params) - done)
  if missing:
    raise KeyError(f"twin parameters without a Keras weight: {missing[:5]}")


def randomize(keras_model, seed=0, scale=0.3):
  """Gives every weight random values (normal, scaled by 1 / sqrt(fan_in)), GroupNorm scales
  around 1: at EDM's initialisation conv1, proj and the output conv are ~1e-5, so a comparison
  there would not see most of the network."""
  rng = np.random.default_rng(seed)
  for var in keras_model.weights:
    shape = tuple(var.shape)
    if var.path.endswith("gamma"):
      value = 1 + scale * rng.normal(size=shape)
    elif len(shape) >= 2:
      value = rng.normal(size=shape) / math.sqrt(np.prod(shape[:-1]))
    else:
      value = scale * rng.normal(size=shape)
    var.assign(value.astype(np.float32))


def compare(keras_model, net, sigmas, per_sigma=2, seed=1, with_labels=True, with_augment=True):
  """max |D_rgd - D_twin| on one random batch holding `per_sigma` images at each of `sigmas`
  (one network call each side; class labels one-hot or zeros, augmentation labels random or
  absent/zeros)."""
  rng = np.random.default_rng(seed)
  h, w, c = keras_model.inputs[0].shape[1:]
  classes = keras_model.inputs[2].shape[-1]
  aug_dim = keras_model.inputs[3].shape[-1] if len(keras_model.inputs) > 3 else 0
  sigma = np.repeat(np.asarray(sigmas, np.float32), per_sigma)
  batch = len(sigma)
  x = (rng.normal(size=(batch, h, w, c)) * np.sqrt(sigma ** 2 + 0.25)[:, None, None, None]
       ).astype(np.float32)   # noisy images: data (sd 0.5) plus noise of their sigma
  labels = np.eye(classes, dtype=np.float32)[rng.integers(classes, size=batch)] if with_labels \
      else np.zeros((batch, classes), np.float32)
  aug = rng.normal(size=(batch, aug_dim)).astype(np.float32) if with_augment and aug_dim else None
  d_k = denoiser.make_denoiser(keras_model)(x, tf.constant(sigma), labels,
                                            augment_labels=aug).numpy()
  with torch.no_grad():
    d_t = edm_denoise(net, torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(sigma),
                      torch.from_numpy(labels), None if aug is None else torch.from_numpy(aug))
  return float(np.abs(d_k - d_t.numpy().transpose(0, 2, 3, 1)).max())


SMALL = dict(resolution=16, channels=3, label_dim=10, augment_dim=9, model_channels=16,
             channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,))


def build_pair(config=None, bug=None, seed=0):
  """(rgd Keras U-Net with random weights, the twin holding the same weights)."""
  cfg = dict(SMALL, **(config or {}))
  model = unet.edm_unet(image_shape=(cfg["resolution"], cfg["resolution"], cfg["channels"]),
                        num_classes=cfg["label_dim"], model_channels=cfg["model_channels"],
                        channel_mult=tuple(cfg["channel_mult"]), num_blocks=cfg["num_blocks"],
                        attn_resolutions=tuple(cfg["attn_resolutions"]), dropout=0.0,
                        augment_dim=cfg["augment_dim"])
  randomize(model, seed)
  net = SongUNetTwin(bug=bug, **cfg).eval()
  copy_keras_weights(model, net)
  return model, net


def seed_bug(net, bug):
  """Plants `bug` (a BUGS key, or None to remove it) in an existing twin."""
  if bug is not None and bug not in BUGS:
    raise ConfigError(f"--seed_bug: {bug!r} is not one of {sorted(BUGS)}")
  for module in net.modules():
    if isinstance(module, (Block, SongUNetTwin)):
      module.bug = bug


def cifar10_parameter_count():
  """Parameters of the twin at EDM's CIFAR-10 cond config (train.py ddpmpp, augment_dim 9)."""
  return sum(p.numel() for p in SongUNetTwin().parameters())


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed_bug", choices=sorted(BUGS))
  parser.add_argument("--tol", type=float, default=1e-4)
  parser.add_argument("--count_cifar10", action="store_true")
  args = parser.parse_args(argv)
  if args.count_cifar10:
    print(f"twin SongUNet (ddpmpp, CIFAR-10, label_dim 10, augment_dim 9): "
          f"{cifar10_parameter_count():,} parameters")
    return 0
  model, net = build_pair(bug=args.seed_bug)
  worst = 0.0
  for labels in (True, False):
    for augment in (True, False):
      diff = compare(model, net, [0.002, 0.2, 2.0, 80.0], with_labels=labels,
                     with_augment=augment)
      print(f"labels={labels} augment={augment}: max |D_rgd - D_twin| = {diff:.3g}")
      worst = max(worst, diff)
  ok = worst <= args.tol
  print(("PASS" if ok else "FAIL") + f": worst {worst:.3g} vs tolerance {args.tol}")
  return 0 if ok else 1


if __name__ == "__main__":
  cli.run(main, "edm_torch_twin.py", absl_flags=False)
