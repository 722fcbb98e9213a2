#!/usr/bin/env python
"""rgd benchmarks: one entry, one module per subject (rgd/bench/<subject>.py).

  python tools/benchmark.py train   [--model=wrn-28-10 --batch_size=128 --precision=bfloat16 --jit]
  python tools/benchmark.py input   [--batch_size=1024 --augmentations=none,cutmix]
  python tools/benchmark.py eval    [--model=wrn-28-10 --batch_size=256]
  python tools/benchmark.py records [--num_images=100000]
  python tools/benchmark.py beam    [--num_images=100000 --workers=1,2]   (needs apache-beam)
  python tools/benchmark.py certify [--model=liresnet-L6W128 --batch_size=256 --jit]
  python tools/benchmark.py ada     [--model=preact_resnet50 --batch_size=128 --num_groups=0]
  python tools/benchmark.py train_vs_torch [--model=wrn-10-2 --batch_size=128 --rounds=3]
  python tools/benchmark.py eval_vs_reference [--model=M.keras --data=test.npz --n=500]
  python tools/benchmark.py sample  [--size=cifar10 --num_steps=18 --batch_per_device=64]

`--help` after a subject lists its options. Throughput is reported with MFU (model FLOPs per
second / peak FLOPs of the device) where FLOPs make sense.
"""
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from rgd import cli  # pylint: disable=wrong-import-position  (after the log level)
SUBJECTS = ("train", "input", "eval", "records", "certify", "ada", "train_vs_torch",
            "eval_vs_reference", "beam", "sample")


def main(argv):
  if len(argv) < 2 or argv[1] not in SUBJECTS:
    print(__doc__)
    print(f"benchmark.py: expected one of {SUBJECTS}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"rgd.bench.{argv[1]}")
  return module.main(argv[2:]) or 0


if __name__ == "__main__":
  cli.run(main, "benchmark.py", argv=sys.argv, absl_flags=False)
