"""rgd's AutoAttack against the reference AutoAttack (fra31, `pyautoattack`) in time, on the
same model and images:

  python tools/benchmark.py eval_vs_reference --model=DIR/model.keras --data=DIR/test.npz --n=500
  python tools/benchmark.py eval_vs_reference --train=robust_wrn --n=100

Runs tools/crosscheck_autoattack.py (which also checks that rgd's robust accuracy is not above
the reference's, pointwise) and prints the seconds of each and rgd's speed-up. The reference
attacks the Keras model through a torch bridge that calls TF (forward and VJP), so both sides
run the same TF network; the bridge adds a host copy per call. Needs torch and pyautoattack.
"""
import os
import re
import subprocess
import sys

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "tools", "crosscheck_autoattack.py")


def main(argv):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(TOOL))] + [
          p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  out = subprocess.run([sys.executable, TOOL] + list(argv), capture_output=True, text=True,
                       check=False, env=env)
  print(out.stdout)
  m = re.search(r"\| ([\d.]+) / ([\d.]+) / ([\d.]+) \|", out.stdout)
  if not m:
    print(out.stderr[-3000:], file=sys.stderr)
    return out.returncode or 1
  ref, aa, aamt = (float(g) for g in m.groups())
  print(f"seconds: reference AutoAttack {ref:.0f}, rgd autoattack {aa:.0f} "
        f"({ref / max(aa, 1e-9):.2f}x faster), rgd aa+mt {aamt:.0f}")
  return out.returncode
