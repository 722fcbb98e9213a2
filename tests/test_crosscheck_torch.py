"""tools/crosscheck_torch.py: rgd's network and TRADES step agree with the PyTorch twin, and the
check fails on seeded bugs. Skipped unless torch is installed (it is not an rgd dependency)."""
import io
import os
import sys

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import crosscheck_torch  # noqa: E402  pylint: disable=g-import-not-at-top


def _run(model, bug=None):
  out = io.StringIO()
  ok, results = crosscheck_torch.run(model, batch_size=4, steps=2, attack_steps=2,
                                     bugs=(bug,) if bug else (), stream=out)
  return ok, results, out.getvalue()


def test_wrn_step_agrees_with_torch():
  ok, results, text = _run("wrn-10-1")
  assert ok, text
  assert results["logits, moving statistics"] < 1e-4


@pytest.mark.parametrize("bug,failing,tolerance", [
    ("kl_direction", "DeepMind BN: loss, rel.", "loss"),
    ("wd_on_bn", "Zhang BN: gradient, rel. to max", "grad"),
])
def test_seeded_bug_is_found(bug, failing, tolerance):
  ok, results, text = _run("tiny_cnn", bug)
  assert not ok, text
  assert results[failing] > crosscheck_torch.TOLERANCES[tolerance], text
