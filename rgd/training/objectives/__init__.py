"""Training objectives: a written protocol (`base.TrainingObjective`) and a registry of one class
per objective, the way rgd.augment.AUGMENTATIONS registers augmentations.

  name        class                   module                           paper
  'trades'    adversarial.Trades      rgd/training/objectives/         Zhang et al. 2019
  'pgd_at'    adversarial.PgdAT       rgd/training/objectives/         Madry et al. 2018
  'standard'  standard.Standard       rgd/training/objectives/         clean CE (seed 001 App. D)
  'mart'      mart.Mart               rgd/training/objectives/         Wang et al. 2020
  'gloro'     certified.GloRo         rgd/training/objectives/         Leino et al. 2021 (seed 004)
  'linf_dist' certified.LinfDist      rgd/training/objectives/         Zhang et al. 2021 (seed 004)
  'lot'       certified.LOT           rgd/training/objectives/         Xu et al. 2022 (seed 004)

`Objective(kind=..., ...)` is the gin-configurable factory of gin/*.gin (`Objective.kind`,
`Objective.beta`, ...): it builds `OBJECTIVES[kind]` from the parameters its constructor names
(`TrainingObjective.from_objective_params`) and wraps it in seed 003's corruption stage and
AugMix's JS term when `corruption` is given (rgd/training/objectives/wrappers.py).
`register(name, cls)` adds an objective (docs/training.md "How to add an objective").
"""
import gin

from rgd.errors import ConfigError
from rgd.training.objectives import base
from rgd.training.objectives.adversarial import AdversarialObjective, PgdAT, Trades, make_pgd
from rgd.training.objectives.adversarial import trades_loss
from rgd.training.objectives.base import Losses, Passes, StepBatch, Threat, TrainingObjective
from rgd.training.objectives.base import Validation, kl_divergence, soft_cross_entropy
from rgd.training.objectives.mart import Mart, mart_loss
from rgd.training.objectives.standard import Standard
from rgd.training.objectives.wrappers import Corrupted, JensenShannon, jensen_shannon
from rgd.training.objectives.certified import LOT, CertifiedObjective, GloRo, LinfDist

OBJECTIVES = {
    "trades": Trades,
    "pgd_at": PgdAT,
    "standard": Standard,
    "mart": Mart,
    "gloro": GloRo,
    "linf_dist": LinfDist,
    "lot": LOT,
}


def register(name, cls):
  """Adds objective class `cls` (a `TrainingObjective`) as `Objective.kind = name`; its
  `name` attribute becomes `name`. Returns `cls`, so it can decorate the class."""
  if not (isinstance(cls, type) and issubclass(cls, TrainingObjective)):
    raise TypeError(f"register({name!r}, {cls!r}): not a TrainingObjective subclass")
  if name in OBJECTIVES and OBJECTIVES[name] is not cls:
    raise ConfigError(f"An objective is already registered as {name!r}: {OBJECTIVES[name]}")
  cls.name = name
  OBJECTIVES[name] = cls
  return cls


def unregister(name):
  """Removes `name` from the registry (tests that register a throwaway objective)."""
  OBJECTIVES.pop(name, None)


@gin.configurable
def Objective(kind="trades", beta=6.0, norm="linf", eps=8. / 255,  # pylint: disable=invalid-name
              attack_steps=10, attack_optimizer="sign", attack_step_size=None, init_stddev=1e-3,
              batch_stats_attack=True, kl_attack_target="prediction", corruption=None):
  """The objective `kind` of the registry, configured by gin.

  beta: weight of the robust term (TRADES, MART). norm, eps: the threat model.
  attack_optimizer: 'sign' (step `attack_step_size`, default 2/255 for Linf and 2.5 * eps /
    steps for L2; start `init_stddev` * N(0, 1) for TRADES and MART) or 'adam' (lr 0.1, / 10
    after half the steps, uniform start; seed 001 App. A, the default of gin/base.gin).
  batch_stats_attack: the BN mode (rgd/training/objectives/adversarial.py docstring).
  kl_attack_target: TRADES' attack target, 'prediction' or 'label' (gin/cutmix.gin).
  corruption: an `rgd.corruptions.stage.CorruptionStage` (AdA, AugMix, JS term; seed 003) run
    on the images before everything else; its images replace the clean ones.
  Parameters an objective's constructor does not name are ignored by it (certified objectives
  take theirs from `CertifiedObjective`).
  """
  if kind not in OBJECTIVES:
    raise ConfigError(f"Objective.kind={kind!r}: expected one of {sorted(OBJECTIVES)}")
  objective = OBJECTIVES[kind].from_objective_params(
      beta=beta, norm=norm, eps=eps, attack_steps=attack_steps,
      attack_optimizer=attack_optimizer, attack_step_size=attack_step_size,
      init_stddev=init_stddev, batch_stats_attack=batch_stats_attack,
      kl_attack_target=kl_attack_target)
  if corruption is not None:
    if corruption.jsd_weight:
      objective = JensenShannon(objective, corruption.jsd_weight)
    objective = Corrupted(objective, corruption)
  return objective


def recorded_threat(run_info):
  """The threat a run's model.json records: {'norm', 'eps'} or None (no threat model). A
  model.json written before the threat was recorded has the objective's name, `norm` and
  `eps`: an objective that is not `robust` had none."""
  if "threat" in run_info:
    return run_info["threat"]
  cls = OBJECTIVES.get(run_info.get("objective", "trades"))
  if cls is not None and not cls.robust:
    return None
  return {"norm": run_info.get("norm"), "eps": run_info.get("eps")}
