"""The certified training objectives, as a part of rgd.training.objectives.Objective (kinds 'gloro' and
'linf_dist'): the trainer, data mixing, EMA, checkpoints and export are the adversarial ones.

`CertifiedObjective.bind(network, step, total_steps)` gives it the online network (its Lipschitz
layers) and the optimizer's step variable (the eps / p / lambda schedules). `loss` returns what
rgd.training.trainer.RobustTrainer.train_step expects: per-example parts, the clean logits and the
"adversarial" logits, here the worst-case logits ([y, y_bot] for GloRo), so that the trainer's
`adv_accuracy` is the training-time verified accuracy (with the power-iteration bound and the
training eps; not a certificate).
"""
import gin
import tensorflow as tf

from rgd.certified import gloro, linf_dist

KINDS = ("gloro", "linf_dist")


@gin.configurable
class CertifiedObjective:
  """kind 'gloro': L2 (loss, power_iterations, eps_min_ratio/eps_max_ratio, lam; see
  rgd.certified.gloro). kind 'linf_dist': Linf l_inf-dist Net / SortNet (eps_train_ratio,
  p_start, p_end, p_anneal, lam0, lam_end; see rgd.certified.linf_dist)."""

  def __init__(self, kind, eps, loss="margin", power_iterations=10, eps_min_ratio=0.1,
               eps_max_ratio=1.5, lam=1.0, eps_train_ratio=3.0, p_start=8.0, p_end=1000.0,
               p_anneal=(100 / 1300, 1250 / 1300), lam0=0.1, lam_end=5e-4):
    if kind not in KINDS:
      raise ValueError(f"Unknown certified objective {kind!r}; expected one of {KINDS}")
    if kind == "gloro" and loss not in gloro.LOSSES:
      raise ValueError(f"CertifiedObjective.loss={loss!r}: expected one of {gloro.LOSSES}")
    self.kind, self.eps, self.loss_kind = kind, float(eps), loss
    self.power_iterations, self.lam = int(power_iterations), float(lam)
    self.eps_ratios = (float(eps_min_ratio), float(eps_max_ratio))
    self.eps_train_ratio = float(eps_train_ratio)
    self.p_range, self.p_anneal = (float(p_start), float(p_end)), tuple(p_anneal)
    self.lam_range = (float(lam0), float(lam_end))
    self.network = self.step = None
    self.total_steps = 1

  def bind(self, network, step, total_steps):
    if self.kind == "gloro":
      gloro.split_gloro_model(network)        # fails early on an unsuitable model
    else:
      linf_dist.check_linf_dist_model(network)
    self.network, self.step, self.total_steps = network, step, int(total_steps)

  def _step(self):
    if self.network is None:
      raise RuntimeError("CertifiedObjective.bind(network, step, total_steps) was not called")
    return self.step

  def loss(self, train_fn, images, soft_labels):
    step = self._step()
    if self.kind == "gloro":
      eps_t = gloro.eps_schedule(step, self.total_steps, self.eps, *self.eps_ratios)
      # Lipschitz bound first (it advances the persistent iterates), then the forward pass.
      body_l = gloro.power_body_lipschitz(self.network, self.power_iterations, update=True)
      logits = train_fn(images)
      head = self.network.layers[-1].head_kernel()
      total, parts, with_bot = gloro.gloro_loss(self.loss_kind, logits, soft_labels, head,
                                                body_l, eps_t, self.lam)
      return dict(parts, total=total), logits, with_bot
    ratio = linf_dist.progress(step, self.total_steps, *self.p_anneal)
    p = linf_dist.p_schedule(ratio, *self.p_range)
    for layer in linf_dist.dist_layers(self.network):
      layer.p.assign(p)
    lam = linf_dist.lam_schedule(ratio, *self.lam_range)
    logits = train_fn(images)
    scale = linf_dist.logit_scale(self.network).value()
    # The network sees (x - mean) / std: eps in its units is eps / std (reference `main.py`).
    eps_train = self.eps_train_ratio * self.eps / linf_dist.input_std(self.network)
    total, hinge, ce, worst = linf_dist.mixture_loss(logits, scale, soft_labels, eps_train, lam)
    return {"total": total, "ce": ce, "hinge": hinge}, logits, worst
