"""rgd's TRADES step against PyTorch's on the same network, side by side:

  python tools/benchmark.py train_vs_torch --model=wrn-10-2 --batch_size=128 --rounds=3

Runs `tools/benchmark.py train` and `tools/bench_torch_trades.py` (eager, and with --compile
torch.compile too) in fresh processes, alternating, `--rounds` times, and prints the median
images/s of each and the ratio rgd / PyTorch eager. Alternating and taking medians is what
makes the ratio usable on a shared, noisy machine. Needs torch (not an rgd dependency).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "tools")


def _throughput(cmd):
  # This checkout's rgd, whatever rgd is installed.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(TOOLS)] + [
      p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  m = re.search(r"throughput\s+([\d.]+) images/s", out.stdout)
  if out.returncode or not m:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
  return float(m.group(1))


def main(argv):
  p = argparse.ArgumentParser(prog="benchmark.py train_vs_torch",
                              description=__doc__.split("\n")[0])
  p.add_argument("--model", default="wrn-10-2")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--compile", action="store_true", help="also time torch.compile")
  p.add_argument("--rgd_flags", default="", help="extra flags for `benchmark.py train`")
  args = p.parse_args(argv)
  common = [f"--model={args.model}", f"--batch_size={args.batch_size}",
            f"--steps={args.steps}", f"--warmup={args.warmup}"]
  runs = {"rgd": [sys.executable, os.path.join(TOOLS, "benchmark.py"), "train"] + common +
                 args.rgd_flags.split(),
          "torch eager": [sys.executable, os.path.join(TOOLS, "bench_torch_trades.py")] + common}
  if args.compile:
    runs["torch.compile"] = runs["torch eager"] + ["--compile"]
  results = {name: [] for name in runs}
  for r in range(args.rounds):
    for name, cmd in runs.items():
      results[name].append(_throughput(cmd))
      print(f"round {r + 1}: {name:<14} {results[name][-1]:.1f} images/s", flush=True)
  med = {name: statistics.median(v) for name, v in results.items()}
  for name, v in med.items():
    print(f"median {name:<14} {v:.1f} images/s  ({', '.join(f'{t:.1f}' for t in results[name])})")
  print(f"ratio rgd / torch eager  {med['rgd'] / med['torch eager']:.2f}x")
  return 0
