"""Evaluation: suites of attacks run as cascades, corruption benchmarks, certificates, reports.

  cascade      runs an attack suite (rgd.attacks.suites) as a cascade over the survivors
  checks       checks of a model before any attack (AutoAttack's checks.py)
  stage_state  per-stage resume of a long evaluation
  target       which model and threat model an evaluation reads (model.json defaults)
  adversarial  robust accuracy under a suite, and its report (rgd.evaluate)
  reports      the TensorBoard events every report writes
  per_class    accuracy per class, named, in every report
  cifar10c     CIFAR-10-C errors and mCE (seed 003), and its report (rgd.evaluate)
  cifar10_1    clean accuracy on CIFAR-10.1 beside CIFAR-10 (seed 003 Table 2), its report
  certified    certified accuracy and radii, and its report (rgd.certify)

Attacks themselves are pure parts in rgd.attacks; this package drives them.
"""
from rgd.attacks import suites

# Every suite `rgd.evaluate --suite` runs, and its kind.
SUITES = {**{name: "attacks" for name in suites.SUITES}, "cifar10c": "corruptions",
          "cifar10_1": "distribution_shift"}
