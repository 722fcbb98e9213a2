#!/usr/bin/env python
"""MultiTargeted against APGD-T with the same budget, pointwise, on a trained model.

  python tools/mt_vs_apgdt.py --model=/tmp/aa/tiny/tiny_cnn.keras --n=200 --table=docs/x.md

Both attack every clean-correct point from scratch (no cascade) with the same number of
gradient steps a point: APGD-T as AutoAttack-standard (1 restart x 9 targets x 100 steps) and
MultiTargeted with 9 runs of 100 steps cycling through the same top-9 targets. Gowal et al. 2019
claim MT needs no more steps than other PGD variants; rgd should show that it is at least
as strong as APGD-T on trained models. Prints robust accuracy of each, the points each breaks
that the other does not, and seconds. The test points default to crosscheck_autoattack.py's
synthetic test set (the one its --train models were trained for).
"""
import argparse
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.evaluation import target  # noqa: E402
from rgd.evaluation import cascade  # noqa: E402
from rgd.attacks.apgd import APGDTargeted  # noqa: E402
from rgd.attacks.multitargeted import MultiTargeted  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_task import synthetic  # noqa: E402


def compare(model, x, y, norm, eps, steps=100, targets=9, batch_size=500, seed=0):
  model_fn = lambda t: model(t, training=False)
  out = {"n": len(x)}
  attacks = {"apgd-t": APGDTargeted(norm, eps, steps, 1, targets),
             "mt": MultiTargeted(norm, eps, steps, num_restarts=targets, num_targets=targets)}
  for name, attack in attacks.items():
    start = time.monotonic()
    res = cascade.run_cascade([attack], model_fn, x, y, batch_size, seed)
    out[f"{name}_seconds"] = time.monotonic() - start
    out[f"{name}_robust"] = res["robust"]
    out["clean"] = res["clean_correct"]
  out["mt_only"] = int(np.sum(~out["mt_robust"] & out["apgd-t_robust"]))
  out["apgdt_only"] = int(np.sum(out["mt_robust"] & ~out["apgd-t_robust"]))
  return out


HEADER = ("| model | n | clean | APGD-T 9x100 | MT 9x100 | broken by MT only / APGD-T only | "
          "seconds (APGD-T / MT) |\n|---|---|---|---|---|---|---|\n")


def row(name, r):
  pct = lambda a: f"{100 * np.mean(a):.1f}%"
  return (f"| {name} | {r['n']} | {pct(r['clean'])} | {pct(r['apgd-t_robust'])} | "
          f"{pct(r['mt_robust'])} | {r['mt_only']} / {r['apgdt_only']} | "
          f"{r['apgd-t_seconds']:.0f} / {r['mt_seconds']:.0f} |")


def main(argv):
  p = argparse.ArgumentParser(prog="mt_vs_apgdt.py", description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="a .keras model taking [0, 1] images")
  p.add_argument("--data", help="an .npz with `image` and `label` (default: the synthetic "
                 "test set)")
  p.add_argument("--n", type=int, default=200)
  p.add_argument("--norm", default="linf", choices=["linf", "l2"])
  p.add_argument("--eps", default="8/255")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--batch_size", type=int, default=500)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--table", help="append the markdown row to this file")
  args = p.parse_args(argv)
  model, _, _ = target.load_model(model_path=args.model)
  if args.data:
    with tf.io.gfile.GFile(args.data, "rb") as f:
      arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
      images, labels = arrays["image"][:args.n], arrays["label"][:args.n]
  else:
    images, labels = synthetic(args.n, seed=99)
  x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32)
  r = compare(model, x, labels.astype(np.int64), args.norm, target.parse_eps(args.eps),
              args.steps, batch_size=args.batch_size, seed=args.seed)
  name = os.path.basename(args.model)
  print(HEADER + row(name, r))
  if args.table:
    with tf.io.gfile.GFile(args.table, "a") as f:
      f.write(row(name, r) + "\n")


if __name__ == "__main__":
  cli.run(main, "mt_vs_apgdt.py", absl_flags=False)
