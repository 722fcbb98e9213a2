"""AdA training-step benchmark: images/s of a step with AdA (seed 003) next to a clean
(cross-entropy) step and a TRADES-10 step of the same classifier, and the MFU of each.

  python tools/benchmark.py ada --model=preact_resnet50 --batch_size=128 [--num_groups=8] [--jit]

Model FLOPs per example, with F the classifier's forward FLOPs and C the corruption network's
(rgd.corruptions.networks `forward_flops`):
  clean step                       3 F
  TRADES-10                       26 F      (rgd/bench/train.py)
  AdA-K + clean step on its output K (3 C + 2 F) + C + 3 F
      (each AdA step: corruption forward, classifier forward, classifier input gradient and
      the corruption network's backward to its weights; one final corruption forward; the
      SSIM guard is ignored, a few percent of a 32x32 forward).
Per-example perturbations (--num_groups=0, the default) turn every corruption conv into a
patches x per-example-kernel product (rgd.corruptions.networks.conv2d): same FLOPs, but not a
cuDNN convolution; --num_groups=G measures the cost of sharing one perturbation per group.
"""
import argparse

import keras
import numpy as np

from rgd import models
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.bench import flops
from rgd.bench import train as bench_train
from rgd.bench.train import device_peak
from rgd.corruptions import ada, networks, stage
from rgd.training.trainer import RobustTrainer, make_distributed_step


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py ada", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="preact_resnet50")
  p.add_argument("--width", type=int, default=None, help="tiny_cnn width")
  p.add_argument("--network", default="edsr_cifar",
                 choices=["edsr_cifar", "edsr_baseline_x4", "cae_cifar"])
  p.add_argument("--num_blocks", type=int, default=16, help="EDSR residual blocks")
  p.add_argument("--features", type=int, default=64, help="EDSR features")
  p.add_argument("--num_groups", type=int, default=0, help="0: one perturbation per example")
  p.add_argument("--ada_steps", type=int, default=10)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--jit", action="store_true")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--modes", default="clean,trades,ada", help="which steps to time")
  p.add_argument("--peak_tflops", type=float, default=None)
  return p.parse_args(argv)


def _time_step(strategy, args, objective, net, avg):
  with strategy.scope():
    trainer = RobustTrainer(net, objective, args.batch_size, weight_decay=1e-4)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.0)
  step = make_distributed_step(strategy, trainer, ema, args.jit)
  return bench_train.seconds_per_step(strategy, step, args.batch_size, args.warmup, args.steps)


def main(argv):
  args = parse_args(argv)
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if args.precision == "bfloat16" else "float32")
  strategy = strategy_lib.get_strategy()
  kw = dict(num_classes=10, width=args.width) if args.model == "tiny_cnn" else dict(
      num_classes=10)
  with strategy.scope():
    net = models.get_model(args.model, **kw)
    avg = models.get_model(args.model, **kw)
  f = flops.forward_flops(net, (32, 32, 3))
  if args.network.startswith("edsr"):
    cnet = networks.get_network(args.network, num_blocks=args.num_blocks,
                                features=args.features)
  else:
    cnet = networks.CAECifar()
  params = {k: v + 0.01 * np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
            for k, v in cnet.init(0).items()}  # non-zero biases: every block has a radius
  c = cnet.forward_flops(32)
  k = args.ada_steps
  objectives = {
      "clean": (lambda: objectives.Objective(kind="standard"), 3 * f),
      "trades": (lambda: objectives.Objective(kind="trades", attack_steps=10), 26 * f),
      "ada": (lambda: objectives.Objective(kind="standard", corruption=stage.CorruptionStage(
          ada=ada.AdA(cnet, params, steps=k, num_groups=args.num_groups or None))),
              k * (3 * c + 2 * f) + c + 3 * f),
  }
  peak, device = device_peak(args.precision)
  peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak * 1e12 if peak else None)
  print(f"device        {device} x{strategy.num_replicas_in_sync} replica(s), {args.precision}, "
        f"XLA {'on' if args.jit else 'off'}, batch {args.batch_size}")
  print(f"classifier    {args.model}: {f / 1e9:.3f} GFLOP forward per image")
  print(f"corruption    {args.network}: {c / 1e9:.3f} GFLOP forward per image; AdA-{k}, "
        f"{'per-example' if not args.num_groups else f'{args.num_groups} groups'}")
  results = {}
  for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
    make, per_example = objectives[mode]
    seconds = _time_step(strategy, args, make(), net, avg)
    img_s = args.batch_size / seconds
    results[mode] = img_s
    mfu = (f"{100 * per_example * img_s / peak:.1f}%" if peak else "n/a")
    print(f"{mode:<8} {seconds * 1e3:9.1f} ms/step {img_s:10.1f} img/s  "
          f"{per_example / 1e9:7.2f} GFLOP/img  MFU {mfu}")
  if "ada" in results:
    for ref in ("clean", "trades"):
      if ref in results:
        print(f"AdA / {ref:<6} throughput ratio {results['ada'] / results[ref]:.3f} "
              f"({results[ref] / results['ada']:.2f}x slower)")
  return 0
