"""Standard training: clean cross-entropy, no attack (the non-robust pseudo-labeller of seed 001
App. D)."""
from rgd.training import validation as validation_lib
from rgd.training.objectives import base


class Standard(base.TrainingObjective):
  """CE(f(x), y) in training mode. It has no threat model; validation still reports PGD-40
  accuracy (at `norm`, 8/255) for information, and selects model.keras by clean accuracy.
  `batch_stats_attack` is the BN mode a corruption stage (AdA) sees the network in."""
  name = "standard"
  robust = False

  def __init__(self, norm="linf", eps=8. / 255, batch_stats_attack=True):
    self.norm, self.eps = norm, float(eps)  # recorded in model.json only, as before
    self.batch_stats_attack = bool(batch_stats_attack)
    self._validation_threat = base.Threat(norm, 8. / 255)

  def losses(self, passes, batch):
    logits = passes.train(batch.images)
    ce = base.soft_cross_entropy(logits, batch.labels)
    return base.Losses({"total": ce, "ce": ce}, logits, None)

  def forward_passes(self):
    return 3  # forward and backward

  def validation(self):
    return base.Validation(validation_lib.pgd40_check, self._validation_threat,
                           selects_robust=False)

  def run_info(self):
    return dict(super().run_info(), norm=self.norm, eps=self.eps)
