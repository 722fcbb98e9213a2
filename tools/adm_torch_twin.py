#!/usr/bin/env python
"""PyTorch twins of rgd's 64x64 generator, written for rgd from reading the references, and the
cross-checks of rgd against them on the same weights:

  * `DhariwalUNetTwin` + `iddpm_denoise`: NVlabs/edm `training/networks.py` DhariwalUNet and
    iDDPMPrecond (module paths as there), the twin of rgd.edm.adm / rgd.edm.iddpm;
  * `GuidedDiffusionTwin`: openai/guided-diffusion `guided_diffusion/unet.py` UNetModel with the
    64x64 model's flags (use_scale_shift_norm, resblock_updown, use_new_attention_order,
    num_head_channels 64, learn_sigma), with its state-dict key names, the twin behind the test
    of rgd.interop.guided_diffusion.

  python tools/adm_torch_twin.py                        # small config: max |D_keras - D_torch|
  python tools/adm_torch_twin.py --seed_bug=scale_shift # must FAIL
  python tools/adm_torch_twin.py --importer             # guided-diffusion state dict -> rgd
  python tools/adm_torch_twin.py --count_imagenet64     # parameters of the ImageNet-64 config

Developer tool: needs torch (CPU is enough). Both twins are NCHW, so the comparisons also check
rgd's NHWC layout (the qkv channel order, the concatenation order). BUGS are mistakes that can be
planted in the NVlabs twin (`--seed_bug`) to show that the check finds them; each keeps the
weights' shapes, so the same weights load.
"""
import argparse
import math
import os
import sys

import numpy as np
import tensorflow as tf
import torch
import torch.nn.functional as tnf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edm_torch_twin import _Conv, _Dense, copy_keras_weights, randomize  # noqa: E402
from rgd.edm import adm, iddpm  # noqa: E402

BUGS = {
    "scale_shift": "the embedding's two halves read as (shift, scale) instead of (scale, shift)",
    "attn_scale": "attention logits divided by sqrt(all channels) instead of sqrt(channels per "
                  "head)",
    "skip_scale": "residual sums scaled by sqrt(0.5) (SongUNet's skip_scale) instead of 1",
    "sin_cos": "noise embedding [sin, cos] instead of PositionalEmbedding's [cos, sin]",
    "c_noise": "iDDPM c_noise = j instead of M - 1 - j",
}


class _Norm(torch.nn.Module):
  """networks.py GroupNorm (min(32, ch // 4) groups, eps 1e-5), or guided-diffusion's
  GroupNorm32 (`groups=32`)."""
  def __init__(self, ch, groups=None):
    super().__init__()
    self.groups = groups or min(32, ch // 4)
    self.weight = torch.nn.Parameter(torch.ones(ch))
    self.bias = torch.nn.Parameter(torch.zeros(ch))

  def forward(self, x):
    return tnf.group_norm(x, self.groups, self.weight, self.bias, eps=1e-5)


def _resample(x, resample):
  if resample == "down":
    return tnf.avg_pool2d(x, 2)
  if resample == "up":
    return tnf.interpolate(x, scale_factor=2, mode="nearest")
  return x


def _attention(q, k, v, heads, bug=None):
  """Multi-head softmax(q^T k / sqrt(c)) v on [N, heads * c, T] each."""
  n, ch, t = q.shape
  c = ch // heads
  q, k, v = (a.reshape(n * heads, c, t) for a in (q, k, v))
  w = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(ch if bug == "attn_scale"
                                                                   else c), dim=2)
  return torch.einsum("nqk,nck->ncq", w, v).reshape(n, ch, t)


class Block(torch.nn.Module):
  """networks.py UNetBlock as DhariwalUNet configures it (adaptive_scale, skip_scale 1,
  resample_proj False, channels_per_head 64)."""
  def __init__(self, cin, cout, emb_ch, attention=False, resample=None, bug=None):
    super().__init__()
    self.bug, self.resample = bug, resample
    self.heads = cout // 64 if attention else 0
    self.norm0 = _Norm(cin)
    self.conv0 = _Conv(cin, cout, 3, resample)
    self.affine = _Dense(emb_ch, 2 * cout)
    self.norm1 = _Norm(cout)
    self.conv1 = _Conv(cout, cout, 3)
    self.skip = _Conv(cin, cout, 1, resample) if cin != cout else None
    if self.heads:
      self.norm2 = _Norm(cout)
      self.qkv = _Conv(cout, 3 * cout, 1)
      self.proj = _Conv(cout, cout, 1)

  def forward(self, x, emb):
    h = self.conv0(tnf.silu(self.norm0(x)))
    scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
    if self.bug == "scale_shift":
      scale, shift = shift, scale
    h = self.conv1(tnf.silu(shift + self.norm1(h) * (scale + 1)))   # dropout: inference only
    x = h + (self.skip(x) if self.skip is not None else _resample(x, self.resample))
    x = x * math.sqrt(0.5) if self.bug == "skip_scale" else x
    if self.heads:
      n, c, hh, ww = x.shape
      q, k, v = self.qkv(self.norm2(x)).reshape(n, self.heads, c // self.heads, 3,
                                                hh * ww).unbind(3)
      a = _attention(*(t.reshape(n, c, hh * ww) for t in (q, k, v)), self.heads, self.bug)
      x = self.proj(a.reshape(n, c, hh, ww)) + x
    return x


class DhariwalUNetTwin(torch.nn.Module):
  """DhariwalUNet: F(x, c_noise, class_labels, augment_labels) in NCHW."""
  def __init__(self, resolution=64, channels=3, out_channels=6, label_dim=1000, augment_dim=0,
               model_channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
               attn_resolutions=(32, 16, 8), bug=None):
    super().__init__()
    self.bug, self.mc = bug, model_channels
    emb_ch = 4 * model_channels
    self.map_augment = _Dense(augment_dim, model_channels, bias=False) if augment_dim else None
    self.map_layer0 = _Dense(model_channels, emb_ch)
    self.map_layer1 = _Dense(emb_ch, emb_ch)
    self.map_label = _Dense(label_dim, emb_ch, bias=False) if label_dim else None
    blk = lambda cin, cout, **kw: Block(cin, cout, emb_ch, bug=bug, **kw)
    self.enc = torch.nn.ModuleDict()
    widths, ch = [], channels
    for level, mult in enumerate(channel_mult):
      r = resolution >> level
      if level == 0:
        self.enc[f"{r}x{r}_conv"] = _Conv(ch, model_channels * mult, 3)
        ch = model_channels * mult
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
        self.dec[f"{r}x{r}_block{i}"] = blk(cin, ch, attention=r in attn_resolutions)
    self.out_norm = _Norm(ch)
    self.out_conv = _Conv(ch, out_channels, 3)

  def forward(self, x, c_noise, class_labels, augment_labels=None):
    half = self.mc // 2
    arg = c_noise[:, None] * (1.0 / 10000) ** (torch.arange(half, dtype=torch.float32) / half)
    emb = torch.cat([arg.sin(), arg.cos()] if self.bug == "sin_cos" else [arg.cos(), arg.sin()],
                    1)
    if self.map_augment is not None and augment_labels is not None:
      emb = emb + self.map_augment(augment_labels)
    emb = self.map_layer1(tnf.silu(self.map_layer0(emb)))
    if self.map_label is not None:
      emb = emb + self.map_label(class_labels)
    emb = tnf.silu(emb)
    skips = []
    for block in self.enc.values():
      x = block(x, emb) if isinstance(block, Block) else block(x)
      skips.append(x)
    for name, block in self.dec.items():
      if "_block" in name:
        x = torch.cat([x, skips.pop()], 1)
      x = block(x, emb)
    return self.out_conv(tnf.silu(self.out_norm(x)))


def iddpm_u(m=1000, c_1=0.001, c_2=0.008):
  """iDDPMPrecond's u buffer, computed as networks.py does (float32 recursion)."""
  alpha_bar = lambda j: (0.5 * np.pi * torch.as_tensor(j) / m / (c_2 + 1)).sin() ** 2
  u = torch.zeros(m + 1)
  for j in range(m, 0, -1):
    u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=c_1) - 1).sqrt()
  return u


def iddpm_denoise(net, x, sigma, class_labels, u, img_channels=3, augment_labels=None, m=1000):
  """iDDPMPrecond.forward: D = x - sigma F(x / sqrt(sigma^2 + 1), M - 1 - j(sigma))[:C]."""
  s = sigma.reshape(-1, 1, 1, 1)
  index = torch.cdist(sigma.reshape(1, -1, 1), u.reshape(1, -1, 1)).argmin(2).flatten()
  c_noise = (index if net.bug == "c_noise" else m - 1 - index).to(torch.float32)
  f = net(x / (s ** 2 + 1).sqrt(), c_noise, class_labels, augment_labels)
  return x - s * f[:, :img_channels]


SMALL = dict(resolution=8, channels=3, out_channels=6, label_dim=10, augment_dim=0,
             model_channels=64, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8, 4))


def build_pair(config=None, bug=None, seed=0):
  """(rgd Keras ADM with random weights, the NVlabs twin holding the same weights)."""
  cfg = dict(SMALL, **(config or {}))
  model = adm.adm_unet(image_shape=(cfg["resolution"], cfg["resolution"], cfg["channels"]),
                       num_classes=cfg["label_dim"], out_channels=cfg["out_channels"],
                       model_channels=cfg["model_channels"],
                       channel_mult=tuple(cfg["channel_mult"]), num_blocks=cfg["num_blocks"],
                       attn_resolutions=tuple(cfg["attn_resolutions"]), dropout=0.0,
                       augment_dim=cfg["augment_dim"])
  randomize(model, seed)
  net = DhariwalUNetTwin(bug=bug, **cfg).eval()
  copy_keras_weights(model, net)
  return model, net


def seed_bug(net, bug):
  """Plants `bug` (a BUGS key, or None to remove it) in an existing twin."""
  if bug is not None and bug not in BUGS:
    raise ValueError(f"--seed_bug: {bug!r} is not one of {sorted(BUGS)}")
  for module in net.modules():
    if isinstance(module, (Block, DhariwalUNetTwin)):
      module.bug = bug


def _batch(keras_model, sigmas, per_sigma, seed, with_labels):
  rng = np.random.default_rng(seed)
  h, w, c = keras_model.inputs[0].shape[1:]
  classes = keras_model.inputs[2].shape[-1]
  sigma = np.repeat(np.asarray(sigmas, np.float32), per_sigma)
  x = (rng.normal(size=(len(sigma), h, w, c)) * np.sqrt(sigma ** 2 + 0.25)[:, None, None, None]
       ).astype(np.float32)
  y = rng.integers(classes, size=len(sigma))
  labels = np.eye(classes, dtype=np.float32)[y] if with_labels \
      else np.zeros((len(sigma), classes), np.float32)
  return x, sigma, y, labels


def _scaled_error(d_a, d_b, sigma):
  """max over images of max |D_a - D_b| / max(sigma, 1): iDDPM's D = x - sigma F is the
  difference of two terms of size ~sigma, so float32 rounding grows with sigma."""
  err = np.abs(d_a - d_b).reshape(len(sigma), -1).max(axis=1)
  return float((err / np.maximum(sigma, 1.0)).max())


def compare(keras_model, net, sigmas, per_sigma=2, seed=1, with_labels=True):
  """max |D_rgd - D_twin| / max(sigma, 1) of iDDPM-preconditioned ADM on one random batch
  holding `per_sigma` noisy images at each of `sigmas`."""
  x, sigma, _, labels = _batch(keras_model, sigmas, per_sigma, seed, with_labels)
  d_k = iddpm.IDDPMPrecond(keras_model)(x, tf.constant(sigma), labels).numpy()
  with torch.no_grad():
    d_t = iddpm_denoise(net, torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(sigma),
                        torch.from_numpy(labels), iddpm_u(), x.shape[-1])
  return _scaled_error(d_k, d_t.numpy().transpose(0, 2, 3, 1), sigma)


# --- guided-diffusion's UNetModel -------------------------------------------------------------

class _GDResBlock(torch.nn.Module):
  """ResBlock(use_scale_shift_norm=True) with up/down inside (resblock_updown)."""
  def __init__(self, cin, cout, emb_ch, resample=None):
    super().__init__()
    self.resample = resample
    self.in_layers = torch.nn.Sequential(_Norm(cin, 32), torch.nn.SiLU(),
                                         torch.nn.Conv2d(cin, cout, 3, padding=1))
    self.emb_layers = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(emb_ch, 2 * cout))
    self.out_layers = torch.nn.Sequential(_Norm(cout, 32), torch.nn.SiLU(), torch.nn.Dropout(0),
                                          torch.nn.Conv2d(cout, cout, 3, padding=1))
    self.skip_connection = torch.nn.Conv2d(cin, cout, 1) if cin != cout else torch.nn.Identity()

  def forward(self, x, emb):
    h = self.in_layers[2](_resample(self.in_layers[1](self.in_layers[0](x)), self.resample))
    x = _resample(x, self.resample)
    scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
    h = self.out_layers[0](h) * (1 + scale) + shift
    return self.skip_connection(x) + self.out_layers[3](self.out_layers[1](h))


class _GDAttention(torch.nn.Module):
  """AttentionBlock with QKVAttention (use_new_attention_order: q, k, v are the three
  contiguous thirds of qkv, each split into heads) or QKVAttentionLegacy (heads first)."""
  def __init__(self, ch, new_order=True):
    super().__init__()
    self.heads, self.new_order = ch // 64, new_order
    self.norm = _Norm(ch, 32)
    self.qkv = torch.nn.Conv1d(ch, 3 * ch, 1)
    self.proj_out = torch.nn.Conv1d(ch, ch, 1)

  def forward(self, x):
    n, c, hh, ww = x.shape
    flat = x.reshape(n, c, -1)
    qkv = self.qkv(self.norm(flat))
    if self.new_order:
      q, k, v = qkv.chunk(3, dim=1)
    else:
      q, k, v = (t.reshape(n, c, -1) for t in qkv.reshape(n, self.heads, 3, c // self.heads,
                                                          -1).unbind(2))
    return (flat + self.proj_out(_attention(q, k, v, self.heads))).reshape(n, c, hh, ww)


class _Seq(torch.nn.Sequential):
  """TimestepEmbedSequential: ResBlocks get the embedding, the rest only x."""
  def forward(self, x, emb):  # pylint: disable=arguments-differ
    for layer in self:
      x = layer(x, emb) if isinstance(layer, _GDResBlock) else layer(x)
    return x


class GuidedDiffusionTwin(torch.nn.Module):
  """UNetModel(x, timesteps, y) with the 64x64 flags; `attention_ds` are downsample rates
  (script_util: image_size // resolution)."""
  def __init__(self, image_size=64, model_channels=192, out_channels=6, num_res_blocks=3,
               attention_resolutions=(32, 16, 8), channel_mult=(1, 2, 3, 4), num_classes=1000,
               new_attention_order=True):
    super().__init__()
    ds_attn = {image_size // r for r in attention_resolutions}
    self.mc = model_channels
    emb_ch = 4 * model_channels
    self.time_embed = torch.nn.Sequential(torch.nn.Linear(model_channels, emb_ch),
                                          torch.nn.SiLU(), torch.nn.Linear(emb_ch, emb_ch))
    self.label_emb = torch.nn.Embedding(num_classes, emb_ch)
    ch = model_channels * channel_mult[0]
    self.input_blocks = torch.nn.ModuleList([_Seq(torch.nn.Conv2d(3, ch, 3, padding=1))])
    chans, ds = [ch], 1
    attn = lambda c: _GDAttention(c, new_attention_order)
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        layers = [_GDResBlock(ch, model_channels * mult, emb_ch)]
        ch = model_channels * mult
        if ds in ds_attn:
          layers.append(attn(ch))
        self.input_blocks.append(_Seq(*layers))
        chans.append(ch)
      if level != len(channel_mult) - 1:
        self.input_blocks.append(_Seq(_GDResBlock(ch, ch, emb_ch, "down")))
        chans.append(ch)
        ds *= 2
    self.middle_block = _Seq(_GDResBlock(ch, ch, emb_ch), attn(ch), _GDResBlock(ch, ch, emb_ch))
    self.output_blocks = torch.nn.ModuleList()
    for level, mult in reversed(list(enumerate(channel_mult))):
      for i in range(num_res_blocks + 1):
        layers = [_GDResBlock(ch + chans.pop(), model_channels * mult, emb_ch)]
        ch = model_channels * mult
        if ds in ds_attn:
          layers.append(attn(ch))
        if level and i == num_res_blocks:
          layers.append(_GDResBlock(ch, ch, emb_ch, "up"))
          ds //= 2
        self.output_blocks.append(_Seq(*layers))
    self.out = torch.nn.Sequential(_Norm(ch, 32), torch.nn.SiLU(),
                                   torch.nn.Conv2d(ch, out_channels, 3, padding=1))

  def forward(self, x, timesteps, y):
    half = self.mc // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = self.time_embed(torch.cat([args.cos(), args.sin()], -1)) + self.label_emb(y)
    hs = []
    for module in self.input_blocks:
      x = module(x, emb)
      hs.append(x)
    x = self.middle_block(x, emb)
    for module in self.output_blocks:
      x = module(torch.cat([x, hs.pop()], 1), emb)
    return self.out(x)


def randomize_torch(net, seed=0, scale=0.3):
  """Random values in every parameter (as `randomize`: no zero-initialised part hides), the
  GroupNorm scales around 1."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in net.parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(scale * noise if p.ndim == 1 else noise / math.sqrt(np.prod(p.shape[1:])))
    for module in net.modules():
      if isinstance(module, _Norm):
        module.weight.add_(1.0)


GD_SMALL = dict(image_size=8, model_channels=128, out_channels=6, num_res_blocks=1,
                attention_resolutions=(8, 4), channel_mult=(1, 2), num_classes=10)


def compare_import(gd_config=None, seed=0, sigmas=(0.01, 0.2, 2.0, 80.0), per_sigma=2):
  """max |D_rgd - D_guided-diffusion| / max(sigma, 1) with rgd's network imported
  (rgd.interop.guided_diffusion) from the state dict of a randomly initialised
  GuidedDiffusionTwin; D is iDDPM-preconditioned on both sides (c_noise = the timestep
  guided-diffusion's model receives)."""
  from rgd.interop import guided_diffusion  # pylint: disable=g-import-not-at-top
  cfg = dict(GD_SMALL, **(gd_config or {}))
  gd = GuidedDiffusionTwin(**cfg).eval()
  randomize_torch(gd, seed)
  state = {k: v.numpy() for k, v in gd.state_dict().items()}
  model = guided_diffusion.build_from_state_dict(state, guided_diffusion.config_with(
      image_size=cfg["image_size"], num_channels=cfg["model_channels"],
      num_res_blocks=cfg["num_res_blocks"], attention_resolutions=cfg["attention_resolutions"],
      channel_mult=cfg["channel_mult"], num_classes=cfg["num_classes"],
      use_new_attention_order=cfg.get("new_attention_order", True)))
  x, sigma, y, labels = _batch(model, sigmas, per_sigma, seed + 1, True)
  d_k = iddpm.IDDPMPrecond(model)(x, tf.constant(sigma), labels).numpy()
  u = iddpm_u()
  with torch.no_grad():
    xt, st = torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(sigma)
    index = torch.cdist(st.reshape(1, -1, 1), u.reshape(1, -1, 1)).argmin(2).flatten()
    s = st.reshape(-1, 1, 1, 1)
    eps = gd(xt / (s ** 2 + 1).sqrt(), (999 - index).float(), torch.from_numpy(y))[:, :3]
    d_t = (xt - s * eps).numpy().transpose(0, 2, 3, 1)
  return _scaled_error(d_k, d_t, sigma)


def imagenet64_parameter_count(out_channels=6):
  """Parameters of the twins at the ImageNet-64 config (out 6: learn_sigma / iDDPMPrecond)."""
  nv = sum(p.numel() for p in DhariwalUNetTwin(out_channels=out_channels).parameters())
  gd = sum(p.numel() for p in GuidedDiffusionTwin(out_channels=out_channels).parameters())
  return nv, gd


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed_bug", choices=sorted(BUGS))
  parser.add_argument("--tol", type=float, default=1e-4)
  parser.add_argument("--importer", action="store_true")
  parser.add_argument("--count_imagenet64", action="store_true")
  args = parser.parse_args()
  if args.count_imagenet64:
    nv, gd = imagenet64_parameter_count()
    print(f"ImageNet-64 ADM (learn_sigma, 1000 classes): DhariwalUNet twin {nv:,}, "
          f"guided-diffusion twin {gd:,} parameters")
    return 0
  if args.importer:
    worst = compare_import()
    print(f"guided-diffusion -> rgd: max |D_rgd - D_gd| / max(sigma, 1) = {worst:.3g}")
  else:
    model, net = build_pair(bug=args.seed_bug)
    worst = max(compare(model, net, [0.01, 0.2, 2.0, 80.0], with_labels=w) for w in (True, False))
    print(f"max |D_rgd - D_twin| / max(sigma, 1) = {worst:.3g}")
  ok = worst <= args.tol
  print(("PASS" if ok else "FAIL") + f": worst {worst:.3g} vs tolerance {args.tol}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
