"""rgd's LOT model (rgd.certified.lot) against the PyTorch twin of tools/lot_torch_twin.py, written
from AI-secure/Layerwise-Orthogonal-Training: the same weights give the same logits to float32
rounding (residual LipResNet and plain LipConvNet, LOT and LLN heads), and the check fails on
mistakes seeded into the twin."""
import os
import sys

import pytest


@pytest.fixture(scope="module")
def twin():
  pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
  import lot_torch_twin  # pylint: disable=g-import-not-at-top
  return lot_torch_twin


@pytest.fixture(scope="module")
def pair(twin):
  # depth 15: three blocks per stage, so the middle one is a residual (mixed) block.
  return twin.build_pair(depth=15, channels=4)


def test_logits_match_the_twin(pair, twin):
  model, net = pair
  diff, scale = twin.compare(model, net)
  assert scale > 0.1                      # random weights: logits of order 1, not ~0
  assert diff <= 1e-5 * max(scale, 1.0)


def test_plain_lln_model_matches_the_twin(twin):
  model, net = twin.build_pair(depth=10, channels=2, residual=False, lln=True, seed=3)
  diff, scale = twin.compare(model, net)
  assert diff <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("bug", ["iterations", "padding", "unshuffle"])
def test_seeded_mistakes_are_caught(pair, twin, bug):
  model, _ = pair
  wrong = twin.LipConvNetTwin(15, 4, 10, residual=True, bug=bug)
  twin.copy_keras_weights(model, wrong)
  diff, scale = twin.compare(model, wrong)
  assert diff > 1e-2 * scale, bug


def test_command_line(twin, capsys):
  assert twin.main(["--depth", "5", "--channels", "2"]) == 0
  assert capsys.readouterr().out.startswith("PASS")
  assert twin.main(["--depth", "5", "--channels", "2", "--seed_bug", "no_centre"]) == 1
