#!/usr/bin/env python
"""PyTorch TRADES-K step of an rgd network, for speed comparisons (not an rgd dependency).

  python tools/bench_torch_trades.py --model=wrn-10-2 --batch_size=128            # eager, CPU
  python tools/bench_torch_trades.py --model=wrn-10-2 --compile                   # torch.compile
  python tools/bench_torch_trades.py --model=wrn-28-10 --device=cuda --bf16 --compile

The network is tools/torch_reference.TorchTwin of the Keras model (same layers, TF SAME
padding) with torch's fused BatchNorm; the step is Zhang et al.'s TRADES with DeepMind's BN mode
(as rgd's default): 10 sign steps on KL from 0.001 * N(0, 1), then CE + 6 KL, weight decay on
kernels, SGD Nesterov. On GPU `--bf16` runs under autocast and the input is channels_last.
Prints `throughput X images/s` (the line tools/benchmark.py train_vs_torch reads).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch (and torch._dynamo, which loads triton) before TensorFlow: triton crashes when it is
# loaded after TF's CUDA stubs.
import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  pylint: disable=unused-import

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch_reference  # noqa: E402

from rgd import cli  # noqa: E402


def main(argv):
  p = argparse.ArgumentParser(prog="bench_torch_trades.py", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="wrn-10-2")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--attack_steps", type=int, default=10)
  p.add_argument("--steps", type=int, default=5, help="timed steps")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--compile", action="store_true", help="torch.compile the network")
  p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
  p.add_argument("--batch_stats_attack", type=int, default=1)
  args = p.parse_args(argv)
  from rgd import models  # pylint: disable=g-import-not-at-top  (TF after torch, see above)
  net = torch_reference.TorchTwin(models.get_model(args.model, num_classes=10),
                                  native_bn=True).move(args.device)
  fn = torch.compile(net) if args.compile else net
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
  g = torch.Generator(device="cpu").manual_seed(0)
  x = torch.rand(args.batch_size, 32, 32, 3, generator=g).to(args.device)
  if args.device == "cuda":
    net.layout = torch.channels_last
  y = torch.nn.functional.one_hot(torch.randint(0, 10, (args.batch_size,), generator=g),
                                  10).float().to(args.device)
  autocast = torch.autocast(args.device, torch.bfloat16, enabled=args.bf16)

  def step():
    noise = 1e-3 * torch.randn(x.shape, device=args.device)
    with autocast:
      torch_reference.trades_step(net, opt, x, y, noise,
                                  batch_stats_attack=bool(args.batch_stats_attack),
                                  steps=args.attack_steps, forward=fn)

  def sync():
    if args.device == "cuda":
      torch.cuda.synchronize()

  for _ in range(args.warmup):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(args.steps):
    step()
  sync()
  elapsed = time.perf_counter() - start
  mode = "torch.compile" if args.compile else "eager"
  print(f"device        {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads")
  print(f"step          TRADES-{args.attack_steps} {args.model}, batch {args.batch_size}, "
        f"{mode}, {'bf16 autocast' if args.bf16 else 'float32'}")
  print(f"time/step     {elapsed / args.steps * 1e3:.1f} ms")
  print(f"throughput    {args.steps * args.batch_size / elapsed:.1f} images/s")
  return 0


if __name__ == "__main__":
  cli.run(main, "bench_torch_trades.py", absl_flags=False)
