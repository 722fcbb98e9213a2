"""Training-step benchmark: images/s and MFU of the TRADES step.

  python tools/benchmark.py train --model=wrn-28-10 --batch_size=128 --precision=bfloat16 --jit

Model FLOPs of one TRADES-K step per example, with F the forward FLOPs of one image (2 x MACs of
convs and dense layers, rgd.bench.flops):
  K attack steps: forward + input grad     2 K F   (no weight gradients are needed)
  training pass on [x; x_adv]: fwd + bwd   2 x 3 F (backward = 2 forward)
  clean target of the attack               1 F, only in Zhang et al.'s BN mode: in DeepMind's
                                           (the default) it is the clean pass of the loss
                                           (objectives.Objective.shares_clean_pass)
so 26 F for TRADES-10 (27 F in Zhang's mode, and in the PyTorch step of
tools/bench_torch_trades.py, which runs the target separately), (2K + 3) F for PGD-AT, (2K + 6) F
for MART, 3 F for standard and certified training: each objective counts its own
(`forward_passes()`, rgd/training/objectives). MFU divides the achieved model FLOPs/s by the device peak (--peak_tflops, or
a known value for the device).
"""
import argparse
import time

import keras
import tensorflow as tf

from rgd import models
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.bench import flops
from rgd.training.trainer import RobustTrainer, make_distributed_step

# Dense peak TFLOP/s per device (vendor data sheets), by precision.
KNOWN_PEAKS = {
    "H100": {"bfloat16": 989.0, "float32": 494.7},   # SXM, dense; fp32 = TF32 tensor cores
    "H200": {"bfloat16": 989.0, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},   # fp32 via TF32
    "V100": {"bfloat16": 125.0, "float32": 15.7},    # fp16 tensor cores
    "TPU v3": {"bfloat16": 123.0, "float32": 123.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
}


def seconds_per_step(strategy, step, batch_size, warmup, steps):
  """Mean wall time of `step` (rgd.training.trainer.make_distributed_step) on a fixed random CIFAR-sized
  batch, after `warmup` untimed steps; shared by the train, certify and ada benchmarks."""
  r = strategy_lib.local_replicas(strategy)
  batch = {"image": tf.random.stateless_uniform([r, batch_size // r, 32, 32, 3], [0, 0]),
           "label": tf.one_hot(tf.zeros([r, batch_size // r], tf.int32), 10)}
  dist = strategy_lib.distribute_stacked(strategy, batch)
  for _ in range(warmup):
    float(step(dist)["count"])
  start = time.perf_counter()
  for _ in range(steps):
    out = step(dist)
  float(out["count"])  # wait for the device
  return (time.perf_counter() - start) / steps


def device_peak(precision):
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return None, "cpu"
  name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
  for key, peaks in KNOWN_PEAKS.items():
    if key in name:
      return peaks[precision] * len(gpus), name
  return None, name


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py train", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="wrn-28-10")
  p.add_argument("--width", type=int, default=None, help="tiny_cnn width")
  p.add_argument("--batch_size", type=int, default=128, help="global batch")
  p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--jit", action="store_true", help="XLA-compile the replica step")
  p.add_argument("--objective", default="trades", choices=list(objectives.OBJECTIVES))
  p.add_argument("--attack_steps", type=int, default=10)
  p.add_argument("--bn", default="fused", choices=["fused", "keras"],
                 help="BatchNorm layer (rgd/models/fused_bn.py; 'keras' = rgd <= 0.2)")
  p.add_argument("--steps", type=int, default=5, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing, autotuning)")
  p.add_argument("--nan_policy", default="stop", choices=["stop", "skip_step"],
                 help="skip_step: the update runs under a cond on the all-reduced finite flag")
  p.add_argument("--peak_tflops", type=float, default=None,
                 help="device peak for MFU; default: known value for the GPU, else no MFU")
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if args.precision == "bfloat16" else "float32")
  strategy = strategy_lib.get_strategy()
  with strategy.scope():
    kw = dict(num_classes=10, width=args.width) if args.model == "tiny_cnn" else dict(
        num_classes=10)
    kw["fused_bn"] = args.bn == "fused"
    net = models.get_model(args.model, **kw)
    avg = models.get_model(args.model, **kw)
    objective = objectives.Objective(kind=args.objective, attack_steps=args.attack_steps)
    trainer = RobustTrainer(net, objective, args.batch_size,
                            skip_nonfinite=args.nan_policy == "skip_step")
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.995)
  step = make_distributed_step(strategy, trainer, ema, args.jit)
  step_s = seconds_per_step(strategy, step, args.batch_size, args.warmup, args.steps)
  img_s = args.batch_size / step_s
  forward = flops.forward_flops(net, (32, 32, 3))
  passes = objective.forward_passes()  # the objective counts its own passes
  if passes is None:
    print(f"objective {args.objective} does not count its passes: no FLOPs or MFU")
    passes = float("nan")
  per_example = passes * forward
  achieved = per_example * img_s
  peak, device = device_peak(args.precision)
  peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak * 1e12 if peak else None)
  print(f"device        {device} x{strategy.num_replicas_in_sync} replica(s)")
  print(f"model         {args.model} ({net.count_params() / 1e6:.2f}M params, "
        f"{forward / 1e9:.3f} GFLOP forward per image)")
  print(f"step          {args.objective}-{args.attack_steps}, batch {args.batch_size}, "
        f"{args.precision}, XLA {'on' if args.jit else 'off'}, BN {args.bn}, "
        f"nan_policy {args.nan_policy}")
  print(f"time/step     {step_s * 1e3:.1f} ms")
  print(f"throughput    {img_s:.1f} images/s")
  print(f"model FLOP/s  {achieved / 1e12:.3f} TFLOP/s ({per_example / 1e9:.2f} GFLOP/example)")
  if peak:
    print(f"MFU           {100 * achieved / peak:.1f}% of {peak / 1e12:.3g} TFLOP/s peak")
  else:
    print("MFU           n/a (pass --peak_tflops)")
  return 0
