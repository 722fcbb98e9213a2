#!/usr/bin/env python
"""Runs the LOT reference code itself (a checkout of AI-secure/Layerwise-Orthogonal-Training) on
the weights of rgd's LOT layers and LipConvnets and reports the largest output difference.

  git clone https://github.com/AI-secure/Layerwise-Orthogonal-Training /tmp/lot_ref
  python tools/lot_reference_check.py --reference_dir=/tmp/lot_ref

Developer tool: needs torch and einops (CPU is enough) and the reference checkout; nothing of the
reference is copied into rgd, its modules are imported from --reference_dir. Its `utils.py` moves
tensors to CUDA at import, so a stand-in `utils` module (the two mappings `lip_convnets.py`
reads: 'lot' -> `LOT`, 'maxmin' -> `MaxMin`) is installed in sys.modules first. The input
normalisation of `utils.get_loaders` ((x - CIFAR-10 mean) / 0.2507) is applied to the
reference's input here; rgd's model does it inside. tools/lot_torch_twin.py is the check that
runs without the reference (tests/test_lot_twin.py).
"""
import argparse
import os
import sys
import types

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rgd import cli  # noqa: E402
from rgd.certified import lot  # noqa: E402
from rgd.certified import models as certified_models  # noqa: E402
from rgd.errors import ConfigError  # noqa: E402

MEAN, STD = np.array([0.4914, 0.4822, 0.4465], np.float32), 0.2507   # reference utils.py


def import_reference(reference_dir):
  sys.path.insert(0, reference_dir)
  import custom_activations  # pylint: disable=g-import-not-at-top
  import lot_ortho_conv  # pylint: disable=g-import-not-at-top
  stand_in = types.ModuleType("utils")
  stand_in.conv_mapping = {"lot": lot_ortho_conv.LOT}
  stand_in.activation_mapping = lambda name, channels=None: custom_activations.MaxMin()
  sys.modules["utils"] = stand_in
  import lip_convnets  # pylint: disable=g-import-not-at-top
  return lot_ortho_conv, lip_convnets


def _torch_kernel(kernel):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))


def check_layers(lot_ortho_conv, rng):
  import torch  # pylint: disable=g-import-not-at-top
  rows = []
  for cin, cout, k, s, hw in [(4, 4, 3, 1, 6), (3, 8, 3, 1, 6), (4, 6, 3, 2, 8), (8, 4, 1, 2, 4),
                              (16, 10, 1, 1, 1)]:
    layer = lot.LOTConv2D(cout, k, strides=s)
    layer.build((None, hw, hw, cin))
    layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape).astype(np.float32))
    layer.bias.assign(rng.normal(0, 0.3, cout).astype(np.float32))
    ref = lot_ortho_conv.LOT(cin, cout, kernel_size=k, stride=s, padding=k // 2)
    with torch.no_grad():
      ref.weight.copy_(_torch_kernel(layer.kernel.numpy()))
      ref.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    x = rng.rand(3, hw, hw, cin).astype(np.float32)
    with torch.no_grad():
      y = ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    diff = float(np.abs(layer(x).numpy() - y.transpose(0, 2, 3, 1)).max())
    rows.append((f"LOT({cin}, {cout}, k={k}, stride={s}) on {hw}x{hw}", diff,
                 float(np.abs(y).max())))
  return rows


def check_networks(lip_convnets, rng, channels=4):
  import torch  # pylint: disable=g-import-not-at-top
  rows = []
  for residual, lln, depth in [(True, False, 15), (False, True, 10), (True, True, 15)]:
    model = certified_models.lipconvnet(depth, 10, init_channels=channels, residual=residual,
                                        lln=lln)
    for w in model.weights:   # random, far from the identity init: nothing hides
      w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    cls = lip_convnets.LipResNet if residual else lip_convnets.LipConvNet
    net = cls("lot", "maxmin", init_channels=channels, block_size=depth // 5, num_classes=10,
              lln=lln)
    convs = [m.conv for m in net.modules() if isinstance(m, lip_convnets.LipBlock)]
    ours = [l for l in model.layers if isinstance(l, lot.LOTConv2D)]
    assert len(convs) == len(ours), (len(convs), len(ours))
    head = model.get_layer("logits")
    with torch.no_grad():
      for conv, layer in zip(convs, ours):
        conv.weight.copy_(_torch_kernel(layer.kernel.numpy()))
        conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))
      kernel = torch.from_numpy(np.ascontiguousarray(head.kernel.numpy().T))
      net.last_layer.weight.copy_(kernel if lln else kernel[:, :, None, None])
      net.last_layer.bias.copy_(torch.from_numpy(head.bias.numpy()))
    net.eval()
    x = rng.rand(4, 32, 32, 3).astype(np.float32)
    with torch.no_grad():
      y = net(torch.from_numpy(np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))))
    diff = float(np.abs(model(x).numpy() - y.numpy()).max())
    rows.append((f"{cls.__name__}-{depth} (width {channels}, lln={lln})", diff,
                 float(np.abs(y.numpy()).max())))
  return rows


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference_dir", required=True)
  parser.add_argument("--tol", type=float, default=1e-4, help="relative to max |output|")
  args = parser.parse_args(argv)
  for name in ("lot_ortho_conv.py", "lip_convnets.py", "custom_activations.py"):
    if not tf.io.gfile.exists(os.path.join(args.reference_dir, name)):
      raise ConfigError(f"--reference_dir={args.reference_dir}: no {name} (a checkout of "
                        f"AI-secure/Layerwise-Orthogonal-Training is expected)")
  lot_ortho_conv, lip_convnets = import_reference(os.path.abspath(args.reference_dir))
  rng = np.random.RandomState(0)
  ok = True
  for name, diff, scale in check_layers(lot_ortho_conv, rng) + check_networks(lip_convnets, rng):
    good = diff <= args.tol * max(scale, 1.0)
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} {name}: max |rgd - reference| = {diff:.3g} "
          f"(max |output| {scale:.3g})")
  print("PASS" if ok else "FAIL")
  return 0 if ok else 1


if __name__ == "__main__":
  cli.run(main, "lot_reference_check.py", absl_flags=False)
