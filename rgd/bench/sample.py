"""EDM sampling benchmark: images/s, MFU and memory of the Heun sampler (rgd.edm).

  python tools/benchmark.py sample --size=cifar10 --num_steps=18 --batch_per_device=256
  python tools/benchmark.py sample --size=tiny --image_size=16 --num_steps=18 --batch_per_device=16
  python tools/benchmark.py sample --generator=DIR   # a trained rgd.train_generator run

Model FLOPs per image: (2 N - 1) F for N Heun steps (N - 1 second-order steps; EDM's 18 steps
are 35 network evaluations), F the forward FLOPs of the U-Net on one image (rgd.bench.flops:
convolutions, dense layers, attention); the preconditioning and the sampler's own arithmetic
are a few element-wise ops per pixel and are left out. The timed function is exactly what
`make_tfrecords.py --generator=edm:DIR` runs (rgd.datagen.sample_job.Sampler) on every local
device. Memory: the GPU's peak allocation, or the process' peak RSS on a CPU (which includes
TensorFlow itself, ~1 GB).
"""
import argparse
import resource
import time

import keras
import numpy as np
import tensorflow as tf

from rgd.bench import flops
from rgd.bench.train import device_peak
from rgd.datagen import sample_job
from rgd.edm import store, unet

SIZES = {
    # EDM CIFAR-10 DDPM++ (gin/edm_cifar10.gin).
    "cifar10": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4,
                    attn_resolutions=(16,)),
    # gin/edm_debug.gin.
    "tiny": dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=()),
    # In between: a quarter of the width, 2 blocks.
    "small": dict(model_channels=32, channel_mult=(2, 2, 2), num_blocks=2,
                  attn_resolutions=(16,)),
}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="benchmark.py sample", description=__doc__.split("\n")[0])
  p.add_argument("--size", default="cifar10", choices=sorted(SIZES))
  p.add_argument("--generator", default=None, help="a trained generator's DIR instead of --size")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--num_classes", type=int, default=10)
  p.add_argument("--num_steps", type=int, default=18, help="Heun steps (18: 35 NFE)")
  p.add_argument("--batch_per_device", type=int, default=64)
  p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--batches", type=int, default=2, help="timed batches")
  p.add_argument("--warmup", type=int, default=1, help="untimed batches (tracing)")
  p.add_argument("--peak_tflops", type=float, default=None,
                 help="device peak for MFU; default: known value for the GPU, else no MFU")
  return p.parse_args(argv)


def _memory():
  if tf.config.list_physical_devices("GPU"):
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return f"{peak / 2**30:.2f} GiB peak GPU allocation (GPU:0)"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return f"{rss / 2**30:.2f} GiB peak RSS of the process (CPU; includes TensorFlow)"


def main(argv):
  args = parse_args(argv)
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if args.precision == "bfloat16" else "float32")
  strategy = sample_job.local_strategy()
  with strategy.scope():
    if args.generator:
      network, info = store.load(args.generator)
      num_classes = info["num_classes"]
    else:
      num_classes = args.num_classes
      network = unet.edm_unet(image_shape=(args.image_size, args.image_size, 3),
                              num_classes=num_classes, dropout=0.0, **SIZES[args.size])
  image_sampler = sample_job.Sampler(network, num_classes, seed=0,
                                     batch_per_device=args.batch_per_device, strategy=strategy,
                                     num_steps=args.num_steps)
  batch = image_sampler.batch_size
  start_index = 0
  t0 = time.perf_counter()
  for _ in range(args.warmup):
    image_sampler.sample(np.arange(start_index, start_index + batch))
    start_index += batch
  warmup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.batches):
    image_sampler.sample(np.arange(start_index, start_index + batch))   # .numpy(): synchronous
    start_index += batch
  seconds = (time.perf_counter() - t0) / args.batches
  img_s = batch / seconds
  forward = flops.forward_flops(network, network.input_shape[0][1:])
  nfe = 2 * args.num_steps - 1
  achieved = nfe * forward * img_s
  peak, device = device_peak(args.precision)
  peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak * 1e12 if peak else None)
  print(f"device        {device} x{image_sampler.replicas} replica(s)")
  print(f"network       {args.generator or args.size} ({network.count_params() / 1e6:.2f}M "
        f"params, {forward / 1e9:.3f} GFLOP forward per {network.input_shape[0][1:]} image)")
  print(f"sampler       Heun {args.num_steps} steps ({nfe} network evaluations), batch {batch} "
        f"({args.batch_per_device}/device), {args.precision}")
  print(f"time/batch    {seconds:.2f} s (first batch, with tracing: "
        f"{warmup_s / max(args.warmup, 1):.1f} s)")
  print(f"throughput    {img_s:.2f} images/s")
  print(f"model FLOP/s  {achieved / 1e12:.4f} TFLOP/s ({nfe * forward / 1e9:.2f} GFLOP/image)")
  if peak:
    print(f"MFU           {100 * achieved / peak:.1f}% of {peak / 1e12:.3g} TFLOP/s peak")
  else:
    print("MFU           n/a (pass --peak_tflops)")
  print(f"memory        {_memory()}")
  for n in (1_000_000, 20_000_000):
    hours = n / img_s / 3600
    print(f"{n / 1e6:.0f}M images   {hours:.1f} h ({hours / 24:.1f} days) on this machine")
  return 0
