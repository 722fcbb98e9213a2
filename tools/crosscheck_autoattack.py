#!/usr/bin/env python
"""Runs the reference AutoAttack (fra31/auto-attack as packaged on PyPI, `pyautoattack`) on an
rgd `.keras` model and compares it pointwise with rgd's `autoattack` and `aa+mt` suites.

  python tools/crosscheck_autoattack.py --model=DIR/model.keras --data=DIR/test.npz --n=100
  python tools/crosscheck_autoattack.py --train=robust_wrn --out=/tmp/aa   # train, then compare

Developer tool: needs `pip install torch pyautoattack`; rgd does not depend on them. The torch
model that AutoAttack attacks is a `torch.autograd.Function` whose forward calls the Keras model
in TF and whose backward is TF's vector-Jacobian product, so both sides attack the very same
function. Prints (and with --table appends to a markdown file) one row: model, n, clean
accuracy, reference AA, rgd AA, rgd AA+MT, seconds of each, and the points where rgd reports
robust but the reference found an adversarial example (this must be 0).

`--train=` builds the test models of docs/evaluation.md on a synthetic task (class colour +
noise, as tests/conftest.make_images but noisier so that eps = 8/255 matters): `robust_wrn`
(WRN-10-1, TRADES), `standard_wrn` (WRN-10-1, clean CE), `tiny_cnn` (TRADES).
"""
import argparse
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch before TensorFlow (its CUDA wheel clashes with TF when loaded after it).
import torch  # noqa: E402
import pyautoattack  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rgd import cli, models  # noqa: E402
from rgd.errors import ConfigError  # noqa: E402
from rgd.evaluation import target  # noqa: E402
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.evaluation import cascade  # noqa: E402
from rgd.attacks import suites  # noqa: E402
from rgd.training.trainer import RobustTrainer, make_distributed_step  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_task import synthetic  # noqa: E402


class TFModel(torch.nn.Module):
  """A Keras model (NHWC, [0, 1]) as a torch module on NCHW tensors, gradients from TF."""

  def __init__(self, model):
    super().__init__()
    self.forward_fn = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                                  reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def vjp(x, upstream):
      with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
      return tape.gradient(logits, x, output_gradients=upstream)
    self.vjp_fn = vjp
    outer = self

    class Fn(torch.autograd.Function):
      @staticmethod
      def forward(ctx, x):  # pylint: disable=arguments-differ
        x_tf = tf.constant(x.detach().cpu().numpy().transpose(0, 2, 3, 1))
        ctx.x_tf = x_tf
        return torch.from_numpy(outer.forward_fn(x_tf).numpy()).to(x.device)

      @staticmethod
      def backward(ctx, grad):  # pylint: disable=arguments-differ
        g = outer.vjp_fn(ctx.x_tf, tf.constant(grad.detach().cpu().numpy()))
        return torch.from_numpy(g.numpy().transpose(0, 3, 1, 2).copy()).to(grad.device)
    self.fn = Fn

  def forward(self, x):
    return self.fn.apply(x)


def train(kind, steps, batch_size=64, seed=0):
  """A small model of `kind` trained on `synthetic` data (seconds to a few minutes on CPU)."""
  keras.utils.set_random_seed(seed)
  name, objective = {"robust_wrn": ("wrn-10-1", "trades"),
                     "standard_wrn": ("wrn-10-1", "standard"),
                     "tiny_cnn": ("tiny_cnn", "trades")}[kind]
  net = models.get_model(name, num_classes=10)
  avg = models.get_model(name, num_classes=10)
  avg.set_weights(net.get_weights())
  trainer = RobustTrainer(net, objectives.Objective(kind=objective, attack_steps=5,
                                                     attack_step_size=4. / 255),
                          global_batch_size=batch_size, seed=seed)
  schedule = keras.optimizers.schedules.CosineDecay(0.1, steps)
  trainer.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True))
  trainer.optimizer.build(net.trainable_variables)
  ema = weight_average.WeightAverage(net, avg, 0.99)
  strategy = tf.distribute.get_strategy()
  step = make_distributed_step(strategy, trainer, ema)
  x, y = synthetic(steps * batch_size, seed + 1)
  for t in range(steps):
    sl = slice(t * batch_size, (t + 1) * batch_size)
    batch = {"image": tf.constant(x[sl][None].astype(np.float32) / 255),
             "label": tf.one_hot(y[sl][None], 10)}
    logs = step(strategy_lib.distribute_stacked(strategy, batch))
    if t % 50 == 0 or t == steps - 1:
      print(f"  {kind} step {t}: loss {float(logs['total']) / batch_size:.3f}, adv acc "
            f"{float(logs.get('adv_correct', logs.get('clean_correct', 0))) / batch_size:.2f}",
            flush=True)
  return avg


def compare(model, images, labels, eps, batch_size=500, seed=0):
  """Reference AA, rgd AA and rgd AA+MT on the same points; returns a dict of results."""
  x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32)
  y = labels.astype(np.int64)
  out = {"n": len(x)}
  ref = pyautoattack.AutoAttack(TFModel(model).eval(), norm="Linf", eps=eps, version="standard",
                                seed=seed)
  ref.verbose = False
  start = time.monotonic()
  x_adv, _ = ref.run_standard_evaluation(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                         torch.from_numpy(y), batch_size=batch_size)
  out["ref_seconds"] = time.monotonic() - start
  x_adv = x_adv.numpy().transpose(0, 2, 3, 1)
  assert np.abs(x_adv - x).max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
  ref_pred = model.predict(x_adv, batch_size=batch_size, verbose=0).argmax(1)
  out["ref_robust"] = ref_pred == y
  model_fn = lambda t: model(t, training=False)
  for suite in ("autoattack", "aa+mt"):
    start = time.monotonic()
    res = cascade.run_cascade(suites.get_suite(suite, "linf", eps), model_fn, x, y, batch_size,
                              seed)
    out[f"{suite}_seconds"] = time.monotonic() - start
    out[f"{suite}_robust"] = res["robust"]
    out["clean"] = res["clean_correct"]
  for suite in ("autoattack", "aa+mt"):
    # Points rgd calls robust where the reference found an adversarial example.
    out[f"{suite}_only"] = int(np.sum(out[f"{suite}_robust"] & ~out["ref_robust"]))
    out[f"ref_only_{suite}"] = int(np.sum(~out[f"{suite}_robust"] & out["ref_robust"]))
  return out


HEADER = ("| model | n | clean | reference AA | rgd AA | rgd AA+MT | seconds (ref / AA / AA+MT) "
          "| rgd robust, ref. not (AA / AA+MT) |\n|---|---|---|---|---|---|---|---|\n")


def row(name, r):
  pct = lambda a: f"{100 * np.mean(a):.1f}%"
  return (f"| {name} | {r['n']} | {pct(r['clean'])} | {pct(r['ref_robust'])} | "
          f"{pct(r['autoattack_robust'])} | {pct(r['aa+mt_robust'])} | "
          f"{r['ref_seconds']:.0f} / {r['autoattack_seconds']:.0f} / {r['aa+mt_seconds']:.0f} | "
          f"{r['autoattack_only']} / {r['aa+mt_only']} |")


def main(argv):
  p = argparse.ArgumentParser(prog="crosscheck_autoattack.py", description=__doc__.split("\n")[0])
  p.add_argument("--model", help="a .keras model taking [0, 1] images")
  p.add_argument("--data", help="an .npz with `image` (uint8 or [0, 1] float) and `label`; "
                 "default: the synthetic test set")
  p.add_argument("--train", choices=["robust_wrn", "standard_wrn", "tiny_cnn"],
                 help="train this test model on synthetic data first (saved under --out)")
  p.add_argument("--train_steps", type=int, default=200)
  p.add_argument("--out", default="/tmp/crosscheck_autoattack")
  p.add_argument("--n", type=int, default=100)
  p.add_argument("--eps", default="8/255")
  p.add_argument("--batch_size", type=int, default=500)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--table", help="append the markdown row to this file")
  args = p.parse_args(argv)
  eps = target.parse_eps(args.eps)
  if args.train:
    model = train(args.train, args.train_steps)
    tf.io.gfile.makedirs(args.out)
    path = os.path.join(args.out, f"{args.train}.keras")
    model.save(path)
    name = f"{args.train} ({model.name}, {args.train_steps} steps)"
  else:
    if not args.model:
      raise ConfigError("pass --model=FILE.keras or --train=KIND")
    model, _, _ = target.load_model(model_path=args.model)
    name = os.path.basename(args.model)
  if args.data:
    with tf.io.gfile.GFile(args.data, "rb") as f:
      arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
      images, labels = arrays["image"][:args.n], arrays["label"][:args.n]
  else:
    images, labels = synthetic(args.n, seed=99)
  r = compare(model, images, labels, eps, args.batch_size, args.seed)
  print(HEADER + row(name, r))
  for suite in ("autoattack", "aa+mt"):
    print(f"{suite}: rgd robust where the reference is not: {r[f'{suite}_only']} point(s); "
          f"reference robust where rgd is not: {r[f'ref_only_{suite}']}")
  if args.table:
    with tf.io.gfile.GFile(args.table, "a") as f:
      f.write(row(name, r) + "\n")
  return 1 if r["autoattack_only"] or r["aa+mt_only"] else 0


if __name__ == "__main__":
  cli.run(main, "crosscheck_autoattack.py", absl_flags=False)
