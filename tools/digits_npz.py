#!/usr/bin/env python
"""Writes scikit-learn's 1,797 real 8x8 handwritten digits as an rgd `npz:DIR` data set.

  python tools/digits_npz.py --output_dir=/tmp/digits --size=16

Developer tool (needs scikit-learn, which ships the digits: no download). Each 8x8 image
(values 0..16) is scaled to 0..255, resized bilinearly to --size x --size and repeated over 3
channels; the first --num_test images (of a seeded shuffle) are the test split. A real, if
easy, task for quick certified runs on a CPU (docs/certified.md); no published number uses it.
`--size=32 --num_test=597` writes the built-in DATASET='digits' (rgd.data.digits) as files.
"""
import argparse
import io
import os
import sys

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.data import digits as rgd_digits  # noqa: E402
from rgd.runtime import fileio  # noqa: E402


def digits(size=16, num_test=297, seed=0):
  # The conversion and split of the built-in DATASET='digits' (rgd.data.digits), which is
  # `--size=32 --num_test=597`.
  return rgd_digits.load_all(size, num_test, seed)


def _write(path, images, labels):
  buf = io.BytesIO()
  np.savez(buf, image=images, label=labels)
  fileio.atomic_write_bytes(path, buf.getvalue())


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--size", type=int, default=16)
  parser.add_argument("--num_test", type=int, default=297)
  args = parser.parse_args(argv)
  (xt, yt), (xv, yv) = digits(args.size, args.num_test)
  fileio.makedirs(args.output_dir)
  _write(os.path.join(args.output_dir, "train.npz"), xt, yt)
  _write(os.path.join(args.output_dir, "test.npz"), xv, yv)
  print(f"{len(yt)} train and {len(yv)} test images of {xt.shape[1:]} -> {args.output_dir}")


if __name__ == "__main__":
  cli.run(main, "digits_npz.py", absl_flags=False)
