"""The certified training objectives of seed 004 (registry names 'gloro', 'linf_dist', 'lot'), built
on the math of rgd.certified: the trainer, data mixing, EMA, checkpoints and export are the
adversarial ones.

`bind(network, step, total_steps)` gives the objective the online network (its Lipschitz
layers) and the optimizer's step variable (the eps / p / lambda schedules). `losses` returns the
per-example parts, the clean logits and, as the "adversarial" logits, the worst-case logits
([y, y_bot] for GloRo), so that the trainer's `adv_accuracy` is the training-time verified
accuracy (with the power-iteration bound and the training eps; not a certificate). Validation
is the certified check at the training eps (rgd.training.validation.certified_check).

`CertifiedObjective(kind, eps, ...)` is the gin-configurable factory, with the parameter names of
gin/gloro.gin and gin/linf_dist.gin.
"""
import gin
import tensorflow as tf

from rgd.certified import gloro, linf_dist, lot
from rgd.errors import ConfigError
from rgd.training import validation as validation_lib
from rgd.training.objectives import base

KINDS = ("gloro", "linf_dist", "lot")


class _Certified(base.TrainingObjective):
  """Shared: the factory reads `CertifiedObjective`'s gin bindings; binding is required."""
  norm = None  # the norm it certifies

  @classmethod
  def from_objective_params(cls, **params):
    norm = params.get("norm", cls.norm)
    if norm != cls.norm:
      raise ConfigError(f"Objective.kind={cls.name!r} certifies the {cls.norm} norm, but "
                        f"Objective.norm={norm!r} (set NORM = '{cls.norm}')")
    return CertifiedObjective(cls.name, params.get("eps", 8. / 255))

  def __init__(self, eps):
    self.threat = base.Threat(self.norm, eps)
    self.eps = self.threat.eps
    self.network = self.step = None
    self.total_steps = 1

  def _step(self):
    if self.network is None:
      raise RuntimeError(f"{type(self).__name__}.bind(network, step, total_steps) was not "
                         "called")
    return self.step

  def validation(self):
    return base.Validation(validation_lib.certified_check, self.threat, selects_robust=True)

  def forward_passes(self):
    """One forward and backward (3): the certified loss reads the logits and the Lipschitz
    bounds, whose power iterations run once per step, not per example (not counted)."""
    return 3


class GloRo(_Certified):
  """GloRo (Leino et al. 2021): L2; loss, power_iterations, eps_min_ratio/eps_max_ratio, lam
  (rgd.certified.gloro)."""
  name, norm = "gloro", "l2"

  def __init__(self, eps, loss="margin", power_iterations=10, eps_min_ratio=0.1,
               eps_max_ratio=1.5, lam=1.0):
    super().__init__(eps)
    if loss not in gloro.LOSSES:
      raise ConfigError(f"CertifiedObjective.loss={loss!r}: expected one of {gloro.LOSSES}")
    self.loss_kind = loss
    self.power_iterations, self.lam = int(power_iterations), float(lam)
    self.eps_ratios = (float(eps_min_ratio), float(eps_max_ratio))

  def bind(self, network, step, total_steps):
    gloro.split_gloro_model(network)        # fails early on an unsuitable model
    self.network, self.step, self.total_steps = network, step, int(total_steps)

  def losses(self, passes, batch):
    step = self._step()
    eps_t = gloro.eps_schedule(step, self.total_steps, self.eps, *self.eps_ratios)
    # Lipschitz bound first (it advances the persistent iterates), then the forward pass.
    body_l = gloro.power_body_lipschitz(self.network, self.power_iterations, update=True)
    logits = passes.train(batch.images)
    head = self.network.layers[-1].head_kernel()
    total, parts, with_bot = gloro.gloro_loss(self.loss_kind, logits, batch.labels, head,
                                              body_l, eps_t, self.lam)
    return base.Losses(dict(parts, total=total), logits, with_bot)


class LinfDist(_Certified):
  """l_inf-dist Net (Zhang et al. 2021/2022) and SortNet: Linf; eps_train_ratio, p_start, p_end,
  p_anneal, lam0, lam_end (rgd.certified.linf_dist)."""
  name, norm = "linf_dist", "linf"

  def __init__(self, eps, eps_train_ratio=3.0, p_start=8.0, p_end=1000.0,
               p_anneal=(100 / 1300, 1250 / 1300), lam0=0.1, lam_end=5e-4):
    super().__init__(eps)
    self.eps_train_ratio = float(eps_train_ratio)
    self.p_range, self.p_anneal = (float(p_start), float(p_end)), tuple(p_anneal)
    self.lam_range = (float(lam0), float(lam_end))

  def bind(self, network, step, total_steps):
    linf_dist.check_linf_dist_model(network)
    self.network, self.step, self.total_steps = network, step, int(total_steps)

  def losses(self, passes, batch):
    step = self._step()
    ratio = linf_dist.progress(step, self.total_steps, *self.p_anneal)
    p = linf_dist.p_schedule(ratio, *self.p_range)
    for layer in linf_dist.dist_layers(self.network):
      layer.p.assign(p)
    lam = linf_dist.lam_schedule(ratio, *self.lam_range)
    logits = passes.train(batch.images)
    scale = linf_dist.logit_scale(self.network).value()
    # The network sees (x - mean) / std: eps in its units is eps / std (reference `main.py`).
    eps_train = self.eps_train_ratio * self.eps / linf_dist.input_std(self.network)
    total, hinge, ce, worst = linf_dist.mixture_loss(logits, scale, batch.labels, eps_train,
                                                     lam)
    return base.Losses({"total": total, "ce": ce, "hinge": hinge}, logits, worst)


class LOT(_Certified):
  """LOT (Xu et al. 2022): L2; cross-entropy minus `gamma` times the mean positive part of the
  label's certified radius (AI-secure/Layerwise-Orthogonal-Training `train_robust.py` :188-189,
  `loss = ce_loss - args.gamma * F.relu(curr_cert).mean()`, the certificate regularisation of
  Singla & Feizi's SOC; `--gamma` default 0 (:30), so the README's command trains with plain
  cross-entropy). The radius uses the reference's nominal L = 1 / std (`train_robust.py`
  :165; rgd.certified.lot.certificate_regularizer_radius). The "adversarial" logits are
  [y, y_bot] at eps with that L and the head's rows: the training-time verified accuracy."""
  name, norm = "lot", "l2"

  def __init__(self, eps, gamma=0.0):
    super().__init__(eps)
    self.gamma = float(gamma)

  def bind(self, network, step, total_steps):
    lot.split_lot_model(network)            # fails early on an unsuitable model
    self.network, self.step, self.total_steps = network, step, int(total_steps)
    self.lipschitz = lot.nominal_body_lipschitz(network)

  def losses(self, passes, batch):
    self._step()
    logits = tf.cast(passes.train(batch.images), tf.float32)
    head = self.network.layers[-1]
    kernel = head.head_kernel()
    labels = tf.argmax(batch.labels, axis=1, output_type=tf.int32)
    ce = tf.nn.softmax_cross_entropy_with_logits(tf.cast(batch.labels, tf.float32), logits)
    cert = lot.certificate_regularizer_radius(logits, labels, kernel, self.lipschitz, head.lln)
    total = ce - self.gamma * tf.nn.relu(cert)
    y_bot, _ = gloro.bottom_logit(logits, kernel, self.lipschitz, self.eps)
    with_bot = tf.concat([logits, y_bot[:, None]], axis=1)
    return base.Losses({"total": total, "ce": ce, "certificate": cert}, logits, with_bot)


@gin.configurable
def CertifiedObjective(kind, eps, loss="margin", power_iterations=10,  # pylint: disable=invalid-name
                       eps_min_ratio=0.1, eps_max_ratio=1.5, lam=1.0, eps_train_ratio=3.0,
                       p_start=8.0, p_end=1000.0, p_anneal=(100 / 1300, 1250 / 1300), lam0=0.1,
                       lam_end=5e-4, gamma=0.0):
  """kind 'gloro' (GloRo: loss, power_iterations, eps_min_ratio, eps_max_ratio, lam),
  'linf_dist' (LinfDist: eps_train_ratio, p_start, p_end, p_anneal, lam0, lam_end) or 'lot'
  (LOT: gamma)."""
  if kind == "gloro":
    return GloRo(eps, loss, power_iterations, eps_min_ratio, eps_max_ratio, lam)
  if kind == "linf_dist":
    return LinfDist(eps, eps_train_ratio, p_start, p_end, p_anneal, lam0, lam_end)
  if kind == "lot":
    return LOT(eps, gamma)
  raise ConfigError(f"CertifiedObjective(kind={kind!r}): expected one of {KINDS}")
