"""tools/crosscheck_linf_torch.py: rgd's l_inf-dist Net and SortNet agree with a PyTorch twin of
the reference layers (logits, interval worst case, certified flags and radius, training function
with dropout at p = 8), and the check fails on seeded mistakes. Skipped without torch."""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import crosscheck_linf_torch  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.mark.parametrize("kind", ["linf_dist_net", "sortnet_dropout"])
def test_rgd_agrees_with_the_torch_twin(kind):
  ok, res = crosscheck_linf_torch.check(kind)
  assert ok, res
  assert res["logits"] < 1e-5 and res["train"] < 1e-5 and res["flags_disagree"] == 0


@pytest.mark.parametrize("bug,kind,culprit", [
    ("no_clip", "linf_dist_net", "radius_above_twin"),     # rgd then certifies "more"
    ("sort_q_squared", "sortnet_dropout", "logits"),
    ("p_ignored", "linf_dist_net", "train"),
])
def test_seeded_mistake_is_caught(bug, kind, culprit):
  ok, res = crosscheck_linf_torch.check(kind, bugs=(bug,))
  assert not ok
  limit = dict(radius_above_twin=1e-5, logits=1e-4, train=1e-4)[culprit]
  assert res[culprit] > limit, res
