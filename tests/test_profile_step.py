"""tools/profile_step.py: the trace it captures, and its op-type table (by hand)."""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import profile_step  # noqa: E402  pylint: disable=g-import-not-at-top


def _row(op_type, occurrences, self_us):
  return {"c": [{"v": op_type}, {"v": occurrences}, {"v": self_us}, None]}


def test_op_type_table_sums_self_time_by_type():
  stats = [{"cols": [{"id": "type"}, {"id": "occurrences"}, {"id": "total_self_time"},
                     {"id": "eager"}],
            "rows": [_row("Conv2D", 2, 3e6), _row("Mul", 5, 0.5e6), _row("Conv2D", 1, 1e6),
                     _row("IDLE", 0, 0.5e6)]}]
  rows, total = profile_step.op_type_table(stats, top=2)
  assert total == 5.0
  assert rows == [("Conv2D", 4.0, 0.8, 3), ("Mul", 0.5, 0.1, 5)]


def test_capture_writes_a_trace(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools/profile_step.py"), "capture",
       "--model=tiny_cnn", "--batch_size=8", "--attack_steps=1", "--warmup=1",
       f"--logdir={tmp_path}"], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  traces = glob.glob(str(tmp_path / "plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000
