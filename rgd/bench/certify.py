"""Certified-training benchmark: the GloRo step against a standard step of the same network, and
certification throughput.

  python tools/benchmark.py certify --model=liresnet-L6W128 --batch_size=256 [--jit]

Reports (1) time per training step of the 'gloro' objective (power iteration with
--power_iterations per step, the bound, the margin loss) and of the 'standard' objective
(cross-entropy) on the same network, batch and precision, and their ratio; MFU of both counts
3 forward passes per example (the power iteration works on one image per layer and is left
out of the model FLOPs, so it shows up as lost MFU); (2) certification: seconds to compute the
certified SVD/FFT Lipschitz bound (once per model) and images/s of the certified forward pass
plus radii in float32. For `linf_dist_net-*` / `sortnet-*` the 'linf_dist' objective is timed
and no MFU is given (its distance layers are not multiply-accumulates).
"""
import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from rgd import models
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.bench import train as bench_train
from rgd.bench.train import device_peak
from rgd.certified import certificate, layers as L, lipschitz, precision
from rgd.training.trainer import RobustTrainer, make_distributed_step


def forward_flops(model):
  """2 x MACs of the GloRo model's convs and dense layers per image (None for l_inf-dist)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, L.LinfDist):
      return None
    if isinstance(layer, L.LipConv2D):
      h, w, cin = (int(d) for d in layer.input.shape[1:])
      oh = lipschitz.conv_output_size(h, layer.kernel_size, layer.strides, layer.padding)
      ow = lipschitz.conv_output_size(w, layer.kernel_size, layer.strides, layer.padding)
      total += 2 * oh * ow * layer.kernel_size ** 2 * cin * layer.filters
    elif isinstance(layer, (L.LipDense, L.GloroHead)):
      total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
  return total


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py certify", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="liresnet-L6W128")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--jit", action="store_true")
  p.add_argument("--power_iterations", type=int, default=10)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--cert_images", type=int, default=1024)
  p.add_argument("--peak_tflops", type=float, default=None)
  return p.parse_args(argv)


def time_step(strategy, model_name, kind, args):
  with strategy.scope():
    net = models.get_model(model_name, num_classes=10)
    avg = models.get_model(model_name, num_classes=10)
    eps = 36 / 255 if kind == "gloro" else 8 / 255
    objective = objectives.Objective(kind=kind, norm="l2" if kind == "gloro" else "linf", eps=eps)
    if isinstance(objective, objectives.GloRo):
      objective.power_iterations = args.power_iterations
    trainer = RobustTrainer(net, objective, args.batch_size, weight_decay=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    trainer.optimizer.build(net.trainable_variables)
    objective.bind(net, trainer.optimizer.iterations, 1000)
    ema = weight_average.WeightAverage(net, avg, 0.0)
  step = make_distributed_step(strategy, trainer, ema, args.jit)
  return bench_train.seconds_per_step(strategy, step, args.batch_size, args.warmup,
                                     args.steps), net


def main(argv):
  args = parse_args(argv)
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if args.precision == "bfloat16" else "float32")
  strategy = strategy_lib.get_strategy()
  kind = "gloro" if args.model.startswith("liresnet") else "linf_dist"
  t_cert, net = time_step(strategy, args.model, kind, args)
  t_std, _ = time_step(strategy, args.model, "standard", args)
  flops = forward_flops(net)
  peak, device = device_peak(args.precision)
  peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak * 1e12 if peak else None)
  print(f"device        {device} x{strategy.num_replicas_in_sync} replica(s)")
  print(f"model         {args.model} ({net.count_params() / 1e6:.2f}M params"
        + (f", {flops / 1e9:.3f} GFLOP forward per image)" if flops else ")"))
  xla = "on" if args.jit else "off"
  print(f"step          batch {args.batch_size}, {args.precision}, XLA {xla}")
  for name, t in ((f"{kind} (power it. {args.power_iterations})", t_cert), ("standard", t_std)):
    img_s = args.batch_size / t
    mfu = (f", MFU {100 * 3 * flops * img_s / peak:.1f}%" if flops and peak else "")
    print(f"  {name:26s} {t * 1e3:9.1f} ms/step  {img_s:9.1f} images/s{mfu}")
  print(f"  {kind} / standard step time: {t_cert / t_std:.2f}x")

  # Certification (float32 as written, TF32 off as every certificate): the bound once, then
  # forward + radii.
  keras.mixed_precision.set_global_policy("float32")
  model = certificate.float32_model(net)
  with precision.exact_float32():
    start = time.perf_counter()
    info = certificate.lipschitz_info(model, refresh=True)
    t_bound = time.perf_counter() - start
    images = np.random.RandomState(0).uniform(size=(args.cert_images, 32, 32, 3)).astype(
        np.float32)
    forward = tf.function(lambda x: model(x, training=False), jit_compile=args.jit)
    forward(images[:args.batch_size])
    start = time.perf_counter()
    logits = np.concatenate([forward(images[i:i + args.batch_size]).numpy()
                             for i in range(0, len(images), args.batch_size)])
    certificate.radii_from_logits(info, logits)
    t_cert_img = time.perf_counter() - start
  print(f"certification bound (refresh + SVD/FFT) {t_bound:.2f} s; "
        f"{len(images) / t_cert_img:.1f} images/s certified (float32, batch {args.batch_size})")
  return 0
