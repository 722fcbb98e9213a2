#!/usr/bin/env python
"""Cross-checks rgd's l_inf-dist Net and SortNet against a PyTorch twin of the reference layers.

  python tools/crosscheck_linf_torch.py
  python tools/crosscheck_linf_torch.py --seed_bug=no_clip      # must FAIL

Developer tool: needs torch (CPU). The twin is written for rgd from reading zbh2047/SortNet
`core/models/norm_dist.py`, `core/norm_dist.py` (the pure-torch branches of `norm_dist`,
`norm_dist_dropout`, `sort_neuron`, `bound_inf_dist`; `bound_sort_neuron` is CUDA-only there
and is written here from the monotonicity of order statistics) and `ell_inf_models.py`
(`SortMLPModel.forward` with `up`/`down` and `targets`): no CUDA kernel. On the same weights
it checks, for a dense l_inf-dist Net, a SortNet with dropout, and the training function at
p = 8 with the dropout subsets:
  1. inference logits agree;
  2. the worst-case logits of the box [x - eps, x + eps] clipped to [0, 1] agree (reference
     `margin`), and the certified flags at eps agree wherever the margin is beyond rounding;
  3. the certified radius (bisection on the twin's certificate, 20 steps) agrees with rgd's
     (20 steps), both keeping rgd's rounding allowance: not above it by more than 1e-5, below
     it by at most 2e-4 (rgd widens its float32 bounds outwards by 2^-19 per layer);
  4. the training-mode outputs (p = 8, the dropout subsets of rgd's masks as index sets,
     `MeanShiftDropout` with `index`) agree.
`--seed_bug=NAME` plants a mistake in the twin (BUGS) to show that a check catches it.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.certified import certificate, layers, linf_dist, models  # noqa: E402

BUGS = ("no_clip", "sort_q_squared", "p_ignored")
TOL = dict(logits=1e-4, train=1e-4, radius=1e-5, radius_below=2e-4)


class Twin:
  """The reference's forward, interval bounds and training function on rgd's weights."""

  def __init__(self, model, bugs=()):
    self.bugs = set(bugs)
    norm = model.get_layer("normalize")
    self.mean = torch.tensor(norm.mean, dtype=torch.float64)
    self.std = norm.std
    self.layers = []
    for layer in linf_dist.dist_layers(model):
      self.layers.append(dict(
          w=torch.tensor(layer.weight.numpy().T, dtype=torch.float64),   # [out, in] as torch
          q=layer.sort_q, t=layer.sort_truncate, mean_shift=layer.mean_shift,
          running_mean=torch.tensor(layer.running_mean.numpy(), dtype=torch.float64),
          bias=None if layer.bias is None else torch.tensor(layer.bias.numpy(),
                                                            dtype=torch.float64)))
    self.scalar = float(linf_dist.logit_scale(model).value())

  def _normalise(self, x):
    x = torch.tensor(x, dtype=torch.float64)
    return ((x - self.mean) / self.std).reshape(x.shape[0], -1)

  def _sort(self, z, q, t):
    """`sort_neuron` pure-torch branch on |x - w| given as z [B, out, in]."""
    t = min(t, z.shape[-1])
    if q is None or t == 1:
      return z.max(dim=-1)[0]
    if "sort_q_squared" in self.bugs:
      q = q * q
    c = (1 - q) ** torch.arange(t, dtype=torch.float64) * q
    return torch.topk(z, dim=-1, k=t)[0].matmul(c) / (1 - (1 - q) ** t)

  def logits(self, x):
    h = self._normalise(x)
    for layer in self.layers:
      y = self._sort((h[:, None, :] - layer["w"][None]).abs(), layer["q"], layer["t"])
      h = self._shift(layer, y)
    return (-h * self.scalar).numpy()

  def _shift(self, layer, y):
    if layer["mean_shift"]:
      y = y - layer["running_mean"]
    return y + layer["bias"] if layer["bias"] is not None else y

  def worst_logits(self, x, eps):
    """`SortMLPModel.forward(x, targets, eps, up, down)`: lower/upper of -s * y per class."""
    x = torch.tensor(x, dtype=torch.float64)
    eps = torch.tensor(np.broadcast_to(eps, (x.shape[0],)).copy(), dtype=torch.float64)
    eps = eps.reshape((-1,) + (1,) * (x.dim() - 1))
    lo, hi = x - eps, x + eps
    if "no_clip" not in self.bugs:
      lo, hi = torch.clamp(lo, min=0.0), torch.clamp(hi, max=1.0)
    lo, hi = self._normalise(lo.numpy()), self._normalise(hi.numpy())
    for layer in self.layers:
      w = layer["w"][None]
      x1, x2 = w - lo[:, None, :], hi[:, None, :] - w          # `bound_inf_dist`
      upper = torch.maximum(x1, x2).clamp(min=0)
      lower = (-torch.minimum(x1, x2)).clamp(min=0)
      lo, hi = self._shift(layer, self._sort(lower, layer["q"], layer["t"])), \
          self._shift(layer, self._sort(upper, layer["q"], layer["t"]))
    return (-hi * self.scalar).numpy(), (-lo * self.scalar).numpy()

  def certified(self, x, pred, eps, tol=0.0):
    """The reference certifies when every margin is < 0; `tol`: rgd's rounding allowance."""
    lower, upper = self.worst_logits(x, eps)
    rows = np.arange(len(pred))
    margin = upper - lower[rows, pred][:, None]
    margin[rows, pred] = -np.inf
    return margin.max(axis=1), margin.max(axis=1) < -tol

  def train_outputs(self, x, masks_in, masks_out, p):
    """`norm_dist_dropout`: the l_p distance over the kept inputs (index sets of rgd's masks);
    `MeanShiftDropout` with `index`: unit means over the examples whose next layer keeps it."""
    h = self._normalise(x)
    for layer, keep, out in zip(self.layers, masks_in, masks_out):
      z = (h[:, None, :] - layer["w"][None]).abs()
      if keep is not None:
        z = z * torch.tensor(keep, dtype=torch.float64)[:, None, :]
      pp = float("inf") if "p_ignored" in self.bugs else p
      y = z.max(dim=-1)[0] if np.isinf(pp) else torch.norm(z, p=pp, dim=-1)
      if layer["mean_shift"]:
        if out is None:
          mean = y.mean(dim=0)
        else:
          o = torch.tensor(out, dtype=torch.float64)
          mean = (y * o).sum(0) / (o.sum(0)).clamp(min=1e-10)
        y = y - mean
      h = y + layer["bias"] if layer["bias"] is not None else y
    return (-h * self.scalar).numpy()


def _model(kind, seed):
  keras.utils.set_random_seed(seed)
  if kind == "linf_dist_net":
    net = models.linf_dist_net(4, 24, num_classes=5, input_shape=(4, 4, 1))
  else:
    net = models.sortnet(4, 24, num_classes=5, input_shape=(4, 4, 1), q=0.7, dropout=True)
  rng = np.random.RandomState(seed)
  for layer in linf_dist.dist_layers(net):               # non-trivial mean shifts and biases
    layer.running_mean.assign(rng.normal(size=layer.running_mean.shape).astype(np.float32))
    if layer.bias is not None:
      layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
  linf_dist.logit_scale(net).scale.assign(3.7)
  return net


def _images(n, seed):
  rng = np.random.RandomState(seed)
  x = rng.uniform(size=(n, 4, 4, 1))
  return np.where(rng.uniform(size=x.shape) < 0.4, np.round(x), x).astype(np.float32)


def _rgd_masks(net, batch):
  """The masks rgd's next training call will draw (same stateless seeds as LinfDist.call)."""
  ins, outs = [], []
  for layer in linf_dist.dist_layers(net):
    calls = tf.cast(layer.calls, tf.int32)
    d = int(layer.weight.shape[0])
    ins.append(layers.subset_mask(batch, d, layer.sort_q, tf.stack([calls, layer.index]))
               .numpy() if layer.dropout else None)
    outs.append(layers.subset_mask(batch, layer.units, layer.out_dropout,
                                   tf.stack([calls, layer.index + 1])).numpy()
                if layer.out_dropout is not None else None)
  return ins, outs


def check(kind, bugs=(), eps=0.05, n=32, seed=0):
  net = _model(kind, seed)
  twin = Twin(net, bugs)
  x = _images(n, seed + 1)
  res = {}
  logits = net(x).numpy()
  res["logits"] = float(np.abs(logits - twin.logits(x)).max() / np.abs(logits).max())
  pred = np.argmax(logits, axis=1)
  result = certificate.certify(net, x, pred, radii=[eps], bisection_steps=20)
  margin, twin_flags = twin.certified(x, pred, eps)
  tol = certificate.rounding_tolerance(logits)
  clear = np.abs(margin) > 2 * tol                       # beyond rounding either way
  res["flags_disagree"] = int(np.sum((result["certified_at"][eps] != twin_flags) & clear))
  lo_r, lo_t = np.zeros(n), np.zeros(n)
  hi_t = np.ones(n)
  for _ in range(20):                                    # the twin's own radius by bisection
    mid = (lo_t + hi_t) / 2
    ok = twin.certified(x, pred, mid, tol)[1]
    lo_t, hi_t = np.where(ok, mid, lo_t), np.where(ok, hi_t, mid)
  lo_r = np.where(np.isfinite(result["radius"]), result["radius"], 1.0)
  # Both with rgd's rounding allowance. rgd may not certify more than the twin (beyond the
  # bisections' 2^-20); it certifies a little less: its float32 bounds are widened outwards.
  res["radius_above_twin"] = float(np.max(np.maximum(lo_r, 0) - lo_t))
  res["radius_below_twin"] = float(np.max(lo_t - np.maximum(lo_r, 0)))
  # Training function at p = 8 with rgd's dropout subsets.
  for layer in linf_dist.dist_layers(net):
    layer.p.assign(8.0)
  ins, outs = _rgd_masks(net, n)
  train = net(x, training=True).numpy()
  res["train"] = float(np.abs(train - twin.train_outputs(x, ins, outs, 8.0)).max()
                       / np.abs(train).max())
  ok = (res["logits"] <= TOL["logits"] and res["flags_disagree"] == 0 and
        res["radius_above_twin"] <= TOL["radius"] and
        res["radius_below_twin"] <= TOL["radius_below"] and
        res["train"] <= TOL["train"])
  return ok, res


def run(bugs=(), stream=sys.stdout):
  ok_all, results = True, {}
  for kind in ("linf_dist_net", "sortnet_dropout"):
    ok, res = check(kind, bugs)
    results[kind] = res
    print(f"{kind}: {'OK' if ok else 'FAIL'} {res}", file=stream)
    ok_all &= ok
  return ok_all, results


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed_bug", choices=BUGS, default=None)
  args = parser.parse_args(argv)
  ok, _ = run((args.seed_bug,) if args.seed_bug else ())
  return 0 if ok else 1  # 1: the check failed


if __name__ == "__main__":
  cli.run(main, "crosscheck_linf_torch.py", absl_flags=False)
