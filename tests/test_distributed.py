"""The same global batch gives the same update under MirroredStrategy (2 logical CPUs) as
under the default strategy: loss scaling, gradient all-reduce, weight decay counted once,
attack starts independent of the split, EMA in cross-replica context."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mirrored_two_replicas_equals_default_strategy():
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "distributed_check.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                   TF_DETERMINISTIC_OPS="1"))
  assert result.returncode == 0, result.stderr[-3000:]
  moved = float(re.search(r"max_weight_change (\S+)", result.stdout).group(1))
  diff = float(re.search(r"max_weight_diff (\S+)", result.stdout).group(1))
  losses = re.search(r"loss_single (\S+) loss_mirrored (\S+)", result.stdout)
  # The steps really changed the weights, by far more than the tolerance.
  assert moved > 1e-2
  # Tolerance: float32 summation order of the all-reduce (two partial sums instead of one).
  assert diff < 1e-5, result.stdout
  assert abs(float(losses.group(1)) - float(losses.group(2))) < 1e-4
