#!/usr/bin/env python
"""A PyTorch twin of rgd's LOT model (rgd.certified.lot, rgd.certified.models.lipconvnet),
written for rgd from reading AI-secure/Layerwise-Orthogonal-Training (`lot_ortho_conv.py`,
`lip_convnets.py`, `custom_activations.py`, `utils.py`), and a cross-check of the two on the same
weights.

  python tools/lot_torch_twin.py                         # max |logits_keras - logits_torch|
  python tools/lot_torch_twin.py --seed_bug=padding      # must FAIL
  python tools/lot_torch_twin.py --plain --lln           # LipConvNet without residual, LLN head

Developer tool: needs torch (CPU is enough); rgd does not depend on it. The twin is NCHW and
torch-layout ([cout, cin, k, k]) as the reference, so the comparison also checks rgd's NHWC
layout, its pixel-unshuffle channel order and its kernel transposition. Its convolution is the
reference's algorithm in torch's own FFT and complex matmuls (complex64, as the reference's
training forward), not a call into rgd.

BUGS are mistakes that can be planted in the twin (`--seed_bug`) to show that the check finds
them; each keeps the weights' shapes, so the same weights load.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as tnf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rgd import cli  # noqa: E402
from rgd.certified import models as certified_models  # noqa: E402

BUGS = {
    "iterations": "5 Newton-Schulz iterations instead of the reference's 10 (iter_T)",
    "padding": "no zero padding: a circular convolution over the unpadded image",
    "unshuffle": "pixel unshuffle in space_to_depth order (k1 k2 c) instead of einops' (c k1 k2)",
    "no_centre": "kernel spectrum not multiplied by the centring phase (fft_shift_matrix)",
}
MEAN = (0.4914, 0.4822, 0.4465)    # utils.py cifar10_mean
STD = 0.2507                       # utils.py cifar10_std, the same for the three channels


class LOTTwin(torch.nn.Module):
  """lot_ortho_conv.py `LOT` (training forward, complex64)."""

  def __init__(self, cin, cout, kernel, stride=1, bug=None):
    super().__init__()
    self.stride, self.bug = stride, bug
    cin = cin * stride * stride
    self.weight = torch.nn.Parameter(torch.zeros(cout, cin, kernel, kernel))
    self.bias = torch.nn.Parameter(torch.zeros(cout))

  def unshuffle(self, x):
    b, c, h, w = x.shape
    s = self.stride
    x = x.reshape(b, c, h // s, s, w // s, s)        # b c w k1 h k2
    if self.bug == "unshuffle":
      x = x.permute(0, 3, 5, 1, 2, 4)                # b k1 k2 c w h
    else:
      x = x.permute(0, 1, 3, 5, 2, 4)                # b c k1 k2 w h
    return x.reshape(b, c * s * s, h // s, w // s)

  def ortho_weight(self, n):
    cout, cin, k, _ = self.weight.shape
    idx = torch.arange(n)
    grid = idx[None, :] + idx[:, None]
    s = (-(k - 1)) // 2
    shift = torch.exp(1j * 2 * math.pi * s * grid.double() / n).to(torch.complex64)
    if self.bug == "no_centre":
      shift = torch.ones_like(shift)
    w = shift * torch.fft.fft2(self.weight, (n, n)).conj()
    w = w.reshape(cout, cin, n * n).permute(2, 0, 1)                  # [F, cout, cin]
    eye = torch.eye(cout, dtype=w.dtype)
    s_mat = w @ w.transpose(1, 2).conj() + 1e-4 * eye
    norm = torch.linalg.matrix_norm(s_mat, keepdim=True) + 1e-4      # Frobenius
    y, z = s_mat / norm, eye.expand(s_mat.shape)
    for _ in range(5 if self.bug == "iterations" else 10):
      t = 0.5 * (3 * eye - z @ y)
      y, z = y @ t, t @ z
    return (z @ w) / norm.sqrt()

  def forward(self, x):
    if self.stride > 1:
      x = self.unshuffle(x)
    k = self.weight.shape[-1]
    pad = 0 if self.bug == "padding" else k // 2
    if pad:
      x = tnf.pad(x, (pad,) * 4)
    b, cin, n, _ = x.shape
    cout = self.weight.shape[0]
    xf = torch.fft.fft2(x).permute(2, 3, 1, 0).reshape(n * n, cin, b)
    zf = self.ortho_weight(n) @ xf
    z = torch.fft.ifft2(zf.reshape(n, n, cout, b).permute(3, 2, 0, 1)).real
    if pad:
      z = z[:, :, pad:-pad, pad:-pad]
    return z + self.bias[:, None, None]


def maxmin(z):
  """custom_activations.py `MaxMin`: halves a, b -> [max, min]."""
  a, b = z.split(z.shape[1] // 2, 1)
  return torch.cat([torch.max(a, b), torch.min(a, b)], dim=1)


class LipConvNetTwin(torch.nn.Module):
  """lip_convnets.py `LipConvNet` (residual=False) / `LipResNet` (residual=True) with LOT."""

  def __init__(self, depth, init_channels=32, num_classes=10, residual=True, lln=False,
               bug=None):
    super().__init__()
    self.residual, self.lln = residual, lln
    blocks = depth // 5
    self.convs = torch.nn.ModuleDict()
    self.plan = []        # (name, is a mixed hidden block)
    in_planes, planes = 3, init_channels
    for stage in range(5):
      for b in range(blocks):
        last = b == blocks - 1
        stride = 2 if last else 1
        kernel = 1 if (last and stage == 4) else 3
        name = f"stage{stage + 1}_block{b}"
        self.convs[name] = LOTTwin(in_planes, planes * stride, kernel, stride, bug)
        self.plan.append((name, residual and 0 < b < blocks - 1))
        in_planes = planes * stride
      planes = in_planes
    self.head_weight = torch.nn.Parameter(torch.zeros(num_classes, in_planes))
    self.head_bias = torch.nn.Parameter(torch.zeros(num_classes))
    self.head = LOTTwin(in_planes, num_classes, 1, 1, bug)

  def forward(self, x):
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean) / STD
    for name, mixed in self.plan:
      out = maxmin(self.convs[name](x))
      x = 0.5 * x + 0.5 * out if mixed else out       # sigmoid(0) = 0.5
    if self.lln:                                       # NormalizedLinear
      x = x.reshape(x.shape[0], -1)
      w = self.head_weight / self.head_weight.norm(dim=1, keepdim=True)
      return tnf.linear(x, w, self.head_bias)
    return self.head(x).reshape(x.shape[0], -1)


def copy_keras_weights(keras_model, net):
  """Keras kernels [k, k, cin, cout] -> torch [cout, cin, k, k]; head kernel [d, K] -> [K, d]."""
  with torch.no_grad():
    for name, conv in net.convs.items():
      layer = keras_model.get_layer(name)
      conv.weight.copy_(torch.from_numpy(np.transpose(layer.kernel.numpy(), (3, 2, 0, 1))))
      conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    head = keras_model.get_layer("logits")
    k = torch.from_numpy(head.kernel.numpy().T.copy())
    net.head_weight.copy_(k)
    net.head_bias.copy_(torch.from_numpy(head.bias.numpy()))
    net.head.weight.copy_(k[:, :, None, None])
    net.head.bias.copy_(net.head_bias)


def randomize(keras_model, seed=0, scale=0.3):
  """Random weights everywhere: identity inits and zero biases would hide layout mistakes."""
  rng = np.random.RandomState(seed)
  for w in keras_model.weights:
    w.assign(rng.normal(0.0, scale, w.shape).astype(np.float32))


def build_pair(depth=10, channels=4, num_classes=10, residual=True, lln=False, bug=None, seed=0):
  model = certified_models.lipconvnet(depth, num_classes, (32, 32, 3), channels,
                                      residual=residual, lln=lln)
  randomize(model, seed)
  net = LipConvNetTwin(depth, channels, num_classes, residual, lln, bug)
  copy_keras_weights(model, net)
  return model, net


def compare(model, net, n=4, seed=1):
  """max |logits_keras - logits_torch| on n random images in [0, 1], and the logits' scale."""
  x = np.random.RandomState(seed).rand(n, 32, 32, 3).astype(np.float32)
  y_keras = model(x).numpy()
  with torch.no_grad():
    y_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  return float(np.abs(y_keras - y_torch).max()), float(np.abs(y_torch).max())


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed_bug", choices=sorted(BUGS))
  parser.add_argument("--depth", type=int, default=15)
  parser.add_argument("--channels", type=int, default=4)
  parser.add_argument("--plain", action="store_true", help="LipConvNet (no residual mixing)")
  parser.add_argument("--lln", action="store_true")
  parser.add_argument("--tol", type=float, default=1e-4, help="relative to max |logit|")
  args = parser.parse_args(argv)
  model, net = build_pair(args.depth, args.channels, residual=not args.plain, lln=args.lln,
                          bug=args.seed_bug)
  diff, scale = compare(model, net)
  ok = diff <= args.tol * max(scale, 1.0)
  print(f"{'PASS' if ok else 'FAIL'}: max |logits_rgd - logits_twin| = {diff:.3g} "
        f"(max |logit| {scale:.3g}, tolerance {args.tol} relative)")
  return 0 if ok else 1


if __name__ == "__main__":
  cli.run(main, "lot_torch_twin.py", absl_flags=False)
