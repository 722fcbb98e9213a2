"""Attack benchmark: attack steps per second and MFU of one evaluation attack.

  python tools/benchmark.py eval --model=wrn-28-10 --batch_size=256 --attack=apgd-ce \
      --steps=20 --peak_tflops=989

One attack step is a forward pass and the gradient with respect to the input (no weight
gradients), i.e. 2 F model FLOPs per example with F the forward FLOPs of rgd.bench.flops; the
Square attack queries only the forward pass (1 F). MFU = achieved model FLOPs/s / peak FLOPs/s
(--peak_tflops; without it MFU is not reported). Random images and labels: the cost of an
attack step does not depend on the data.
"""
import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from rgd import models
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square
from rgd.bench import flops
from rgd.errors import ConfigError
from rgd.evaluation import cascade

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "multitargeted", "fab-t", "square")


def make_attack(name, norm, eps, steps):
  """An attack doing `steps` gradient steps (Square: queries) on every example."""
  if name in ("apgd-ce", "apgd-dlr"):
    return APGD(norm, eps, name[5:], num_steps=steps)
  if name == "apgd-t":
    return APGDTargeted(norm, eps, num_steps=steps, num_target_classes=1)
  if name == "multitargeted":
    return MultiTargeted(norm, eps, num_steps=steps, num_restarts=1, num_targets=1)
  if name == "fab-t":
    return FABTargeted(norm, eps, num_steps=steps, num_target_classes=1)
  if name == "square":
    return Square(norm, eps, num_queries=steps)
  raise ConfigError(f"--attack={name!r}: expected one of {ATTACKS}")


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py eval", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="wrn-28-10", help="rgd.models name")
  p.add_argument("--width", type=int, default=None, help="tiny_cnn width")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--attack", default="apgd-ce", choices=ATTACKS)
  p.add_argument("--steps", type=int, default=20, help="attack steps (queries) per run")
  p.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
  p.add_argument("--norm", default="linf", choices=["linf", "l2"])
  p.add_argument("--eps", type=float, default=8 / 255)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--num_classes", type=int, default=10)
  p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--jit", action="store_true", help="XLA-compile the attack")
  p.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU")
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if args.precision == "bfloat16" else "float32")
  shape = (args.image_size, args.image_size, 3)
  net = models.get_model(args.model, num_classes=args.num_classes, input_shape=shape,
                         width=args.width)
  forward = flops.forward_flops(net, shape)
  attack = make_attack(args.attack, args.norm, args.eps, args.steps)
  # Square stops early only once every point is fooled, which a batch of random images does
  # not reach within a benchmark's budget; the other attacks always run all their steps.
  fn = cascade.compile_attack(attack, lambda x: net(x, training=False), args.jit)
  rng = np.random.RandomState(0)
  x = tf.constant(rng.uniform(0, 1, (args.batch_size,) + shape).astype(np.float32))
  logits = net(x, training=False)
  # Labels = predictions, so no point starts misclassified (APGD skips those).
  y = tf.argmax(logits, axis=1, output_type=tf.int32)
  fn(x, y, tf.constant([0, 0])).numpy()                  # trace and compile
  start = time.perf_counter()
  for r in range(args.repeats):
    fn(x, y, tf.constant([0, r + 1])).numpy()
  seconds = (time.perf_counter() - start) / args.repeats
  per_step = (1 if args.attack == "square" else 2) * forward
  steps_per_s = args.steps / seconds
  achieved = steps_per_s * args.batch_size * per_step
  print(f"model         {args.model} ({forward / 1e9:.3f} GFLOPs forward per image)")
  print(f"attack        {args.attack} {args.norm} eps={args.eps:.5f}, {args.steps} steps, "
        f"batch {args.batch_size}, {args.precision}{' XLA' if args.jit else ''}")
  print(f"time per run  {seconds:.3f} s")
  print(f"attack steps  {steps_per_s:.2f} steps/s = {steps_per_s * args.batch_size:.1f} "
        "example-steps/s")
  print(f"achieved      {achieved / 1e12:.4f} TFLOP/s (model FLOPs)")
  if args.peak_tflops:
    print(f"MFU           {100 * achieved / (args.peak_tflops * 1e12):.2f}% of "
          f"{args.peak_tflops} TFLOP/s")
  else:
    print("MFU           n/a (pass --peak_tflops)")
  return 0
