"""Certified accuracy of the weight-averaged model on the held-out images, for rgd.train.

The averaged model's power iterates are not averaged (they are not weights): before certifying,
its iterates are run to convergence (`refresh_power_iterates`, so that model.keras is exported
with converged iterates), and the certificate itself uses the certified SVD/FFT bounds
(rgd.certified.certificate), which do not depend on iterates at all.
"""
from rgd.certified import certificate


def make_validator(avg_network, eps, images, labels, batch_size=256):
  """`run(step) -> (clean accuracy, certified accuracy at eps)`; `run.robust_name` names the
  second number for TensorBoard."""

  def run(step):
    del step
    result = certificate.certify(avg_network, images, labels, batch_size, refresh=True)
    return float(result["correct"].mean()), certificate.certified_accuracy(result, eps)
  run.robust_name = "certified"
  return run
