"""The attack suites rgd.evaluate runs, each a list of attacks (stages) that the evaluation
cascade (rgd/evaluation/cascade.py `run_cascade`) runs in order on the points still robust.

Suites (gin-configurable factories, `get_suite(name, norm, eps)`):
  * `aa+mt`      AA+MT of Gowal et al. 2020 / seeds 000 and 001: APGD-CE (5 x 100) ->
                 APGD-DLR (5 x 100) -> MultiTargeted (10 x 200, margin loss).
  * `autoattack` AutoAttack "standard": APGD-CE (1 x 100) -> APGD-T (9 targets) -> FAB-T
                 (9 targets) -> Square (5000 queries).
  * `pgd40`      the validation attack of DeepMind's experiment (Adam, margin loss, 40 steps).

    stages = get_suite("aa+mt", "linf", 8 / 255)
    [s.name for s in stages]      # ['apgd-ce', 'apgd-dlr', 'multitargeted']

Every stage is an attack of the one protocol (rgd/attacks/protocol.py); its `name` is the stage
name of the reports.
"""
import gin

from rgd.attacks import pgd
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square
from rgd.errors import ConfigError

AA_MT, AUTOATTACK, PGD40 = "aa+mt", "autoattack", "pgd40"


@gin.configurable(denylist=["norm", "eps"])
def aa_mt_suite(norm, eps, apgd_restarts=5, apgd_steps=100, mt_restarts=10, mt_steps=200,
                mt_targets=9, mt_restarts_per_target=False):
  """AA+MT (seed 001 App. A "Evaluation"; docs/recipes.md "Evaluation"). `mt_restarts_per_target`:
  see MultiTargeted (10 runs in total by default, 10 per target as DeepMind's IBP code)."""
  return [APGD(norm, eps, "ce", apgd_steps, apgd_restarts),
          APGD(norm, eps, "dlr", apgd_steps, apgd_restarts),
          MultiTargeted(norm, eps, mt_steps, mt_restarts, mt_targets,
                        restarts_per_target=mt_restarts_per_target)]


@gin.configurable(denylist=["norm", "eps"])
def autoattack_suite(norm, eps, apgd_steps=100, apgd_restarts=1, num_target_classes=9,
                     fab_steps=100, square_queries=5000, p_init=0.8):
  """AutoAttack version='standard' (Croce & Hein 2020; autoattack.py `set_version`)."""
  return [APGD(norm, eps, "ce", apgd_steps, apgd_restarts),
          APGDTargeted(norm, eps, apgd_steps, 1, num_target_classes),
          FABTargeted(norm, eps, fab_steps, 1, num_target_classes),
          Square(norm, eps, square_queries, 1, p_init)]


@gin.configurable(denylist=["norm", "eps"])
def pgd40_suite(norm, eps):
  """PGD-40 (Adam, margin loss), the attack rgd.train validates with (pgd.pgd40_adam_margin)."""
  return [pgd.pgd40_adam_margin(norm, eps)]


SUITES = {AA_MT: aa_mt_suite, AUTOATTACK: autoattack_suite, PGD40: pgd40_suite}


def get_suite(name, norm, eps):
  """The stages of suite `name` (gin bindings of its factory apply)."""
  if name not in SUITES:
    raise ConfigError(f"Unknown suite {name!r}; expected one of {sorted(SUITES)}")
  return SUITES[name](norm, eps)
