#!/usr/bin/env python
"""Cross-checks rgd's GloRo certificate against the `gloro` package (klasleino/gloro, PyPI).

  python tools/crosscheck_gloro.py
  python tools/crosscheck_gloro.py --seed_bug=skip_conv      # must FAIL

Developer tool: needs `pip install gloro`. gloro 1.1.1 is written for tf.keras 2: its `GloroNet`
cannot be built on Keras 3 (its layer computers read `layer.input_shape`), so the check drives
gloro's own code below the model: `LipschitzComputer.for_layer` (duck-typed layers holding
rgd's kernels: its power iteration for conv and dense), `global_lipschitz_bound`, and
`LipschitzMargin._get_yj_j_Kij` / `call` / `certified_radius` (K_ij, y_bot, radius) on a
namespace standing for the margin layer. (numpy 2 dropped `np.infty`, which gloro uses: the tool
restores the alias in its own process.) The network is a conv 3x3 -> MinMax -> dense -> MinMax ->
head in rgd and, with the same weights, in gloro's layout: gloro's MinMax sorts adjacent pairs
into (min, max) where rgd's sorts the two channel halves into (max, min), so the gloro side's
kernels are rgd's with permuted columns and rows (a permutation keeps every norm). Checks:
  1. the logits of both forward passes agree (gloro's MinMax layer);
  2. gloro's converged power-iteration bound of the body equals rgd's own power estimate
     (rel. 1e-3) and is at or below rgd's certified SVD/FFT bound, which exceeds it by at most
     TOL['bound_gap'] (the zero-padded conv against the torus bound);
  3. with the same body constant, K_ij of every class pair and y_bot agree (rel. 1e-5);
  4. every point rgd certifies at eps gloro certifies too, and gloro's radius is at least rgd's.
`--seed_bug=NAME` plants a mistake on the gloro side (BUGS) to show that a check catches it.
"""
import argparse
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if not hasattr(np, "infty"):     # gloro 1.1.1 predates numpy 2
  np.infty = np.inf

from gloro.layers.margin_layers import LipschitzMargin  # noqa: E402
from gloro.layers.network_layers import MinMax as GloroMinMax  # noqa: E402
from gloro.lipschitz_computation import LipschitzComputer  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.certified import certificate, gloro, layers  # noqa: E402

BUGS = ("skip_conv", "no_permutation", "double_eps")
TOL = dict(logits=1e-5, power=1e-3, bound_gap=0.25, pairs=1e-5)


def rgd_model(seed=0, hw=8, channels=2, filters=6, units=8, classes=4):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((hw, hw, channels))
  h = layers.LipConv2D(filters, 3, name="conv")(inputs)
  h = layers.MinMax(name="act0")(h)
  h = keras.layers.Flatten(name="flatten")(h)
  h = layers.LipDense(units, name="dense")(h)
  h = layers.MinMax(name="act1")(h)
  out = layers.GloroHead(classes, lln=False, name="logits")(h)
  model = keras.Model(inputs, out)
  rng = np.random.RandomState(seed)
  for layer in (model.get_layer("conv"), model.get_layer("dense"), model.get_layer("logits")):
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype(np.float32) * 0.5)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32) * 0.1)
  return model


def _pair_order(n):
  """gloro position 2i holds rgd unit i (a), 2i + 1 holds rgd unit n/2 + i (b)."""
  return np.stack([np.arange(n // 2), np.arange(n // 2) + n // 2], axis=1).reshape(-1)


def _after_minmax(n):
  """Input row of the next gloro kernel for each gloro position after its MinMax: (min, max)
  at (2i, 2i + 1) are rgd's min at n/2 + i and max at i."""
  return np.stack([np.arange(n // 2) + n // 2, np.arange(n // 2)], axis=1).reshape(-1)


class GloroSide:
  """The same network in gloro's layout, and gloro's Lipschitz and margin code on it."""

  def __init__(self, model, bugs=()):
    self.bugs = set(bugs)
    conv, dense, head = (model.get_layer(n) for n in ("conv", "dense", "logits"))
    keep = "no_permutation" in self.bugs
    f = conv.filters
    c_order = np.arange(f) if keep else _pair_order(f)
    self.conv_k = conv.kernel.numpy()[..., c_order]
    self.conv_b = conv.bias.numpy()[c_order]
    hw = conv.input_hw
    # Flatten of [H, W, C]: the row for (h, w, gloro channel c) is rgd's (h, w, rgd channel).
    rows = (np.arange(hw[0] * hw[1])[:, None] * f +
            (np.arange(f) if keep else _after_minmax(f))[None]).reshape(-1)
    u = dense.units
    u_order = np.arange(u) if keep else _pair_order(u)
    self.dense_k = dense.kernel.numpy()[rows][:, u_order]
    self.dense_b = dense.bias.numpy()[u_order]
    self.head_k = head.head_kernel().numpy()[np.arange(u) if keep else _after_minmax(u)]
    self.head_b = head.bias.numpy()
    self.minmax = GloroMinMax()
    self.input_shape = (None, *hw, conv.kernel.shape[2])

  def logits(self, x):
    h = tf.nn.conv2d(x, self.conv_k, 1, "SAME") + self.conv_b
    h = tf.reshape(self.minmax(h), [x.shape[0], -1])
    h = self.minmax(tf.matmul(h, self.dense_k) + self.dense_b)
    return (tf.matmul(h, self.head_k) + self.head_b).numpy()

  def body_lipschitz(self, iterations=500):
    """gloro's power iteration (`ConvLayerComputer`, `DenseLayerComputer`), its product."""
    conv = types.SimpleNamespace(name="conv", kernel=tf.Variable(self.conv_k), strides=1,
                                 padding="same", input_shape=self.input_shape)
    dense = types.SimpleNamespace(name="dense", kernel=tf.Variable(self.dense_k))
    parts = [dense] if "skip_conv" in self.bugs else [conv, dense]
    tf.random.set_seed(0)
    computers = [LipschitzComputer.for_layer(p, iterations) for p in parts]
    return float(LipschitzComputer.global_lipschitz_bound(computers))

  def margin_layer(self, body_lipschitz, eps):
    """A stand-in for gloro's LipschitzMargin after `build`: _kW = L * W of the head."""
    ns = types.SimpleNamespace(_epsilon=2 * eps if "double_eps" in self.bugs else eps)
    ns._kW = lambda: body_lipschitz * tf.constant(self.head_k)
    ns._get_yj_j_Kij = lambda y: LipschitzMargin._get_yj_j_Kij(ns, y)
    return ns


def check(bugs=(), n=64, eps=0.05, seed=0):
  model = rgd_model(seed)
  side = GloroSide(model, bugs)
  x = np.random.RandomState(seed + 1).uniform(size=(n, 8, 8, 2)).astype(np.float32)
  res = {}
  logits = model(x).numpy()
  res["logits"] = float(np.abs(logits - side.logits(x)).max() / np.abs(logits).max())
  g_body = side.body_lipschitz()
  power = gloro.refresh_power_iterates(model, tolerance=1e-6, max_iterations=500)
  bound = gloro.certified_body_lipschitz(model)
  res["power"] = abs(power - g_body) / g_body
  res["bound_gap"] = bound / g_body - 1.0
  # K_ij and y_bot with the same constant (gloro's), on rgd's logits.
  ns = side.margin_layer(g_body, eps)
  y = tf.constant(logits)
  _, j, k_ij = LipschitzMargin._get_yj_j_Kij(ns, y)
  head = model.get_layer("logits").head_kernel()
  k_rgd = g_body * gloro.pairwise_constants(head, tf.cast(j, tf.int32)).numpy()
  res["pairs"] = float(np.abs(k_ij.numpy() - k_rgd).max() / np.abs(k_rgd).max())
  g_bot = LipschitzMargin.call(ns, y).numpy()[:, -1]
  r_bot, _ = gloro.bottom_logit(y, head, g_body, eps)
  res["y_bot"] = float(np.abs(g_bot - r_bot.numpy()).max() / np.abs(logits).max())
  # Certificates: rgd's (certified bound, rounding allowance) never certifies more.
  g_radius = LipschitzMargin.certified_radius(ns, y).numpy()
  result = certificate.certify(model, x, np.argmax(logits, axis=1), radii=[eps])
  res["rgd_only_certified"] = int(np.sum(result["certified_at"][eps] & ~(g_radius > eps)))
  res["radius_above_gloro"] = float(np.max(result["radius"] - g_radius))
  res["certified_rgd"], res["certified_gloro"] = (int(result["certified_at"][eps].sum()),
                                                  int(np.sum(g_radius > eps)))
  ok = (res["logits"] <= TOL["logits"] and res["power"] <= TOL["power"] and
        0.0 <= res["bound_gap"] <= TOL["bound_gap"] and res["pairs"] <= TOL["pairs"] and
        res["y_bot"] <= TOL["pairs"] and res["rgd_only_certified"] == 0 and
        res["radius_above_gloro"] <= 0.0)
  return ok, res


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed_bug", choices=BUGS, default=None)
  args = parser.parse_args(argv)
  ok, res = check((args.seed_bug,) if args.seed_bug else ())
  print(f"{'OK' if ok else 'FAIL'} {res}")
  return 0 if ok else 1  # 1: the check failed


if __name__ == "__main__":
  cli.run(main, "crosscheck_gloro.py", absl_flags=False)
