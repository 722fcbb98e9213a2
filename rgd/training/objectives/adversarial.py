"""Adversarial training objectives: TRADES (Zhang et al. 2019) and PGD-AT (Madry et al. 2018).

TRADES, as in seed 001 App. A and DeepMind's JAX experiment (docs/recipes.md "TRADES training"):

    L = CE(f(x), y) + beta * KL(f(x) || f(x_adv)),    beta = 6,
    x_adv = argmax_{x' in B(x, eps) n [0,1]^d} KL(f(x) || f(x')).

BatchNorm, as in DeepMind's experiment (`batch_stats_attack=True`): the attack, its target f(x)
and the clean logits of the loss use the statistics of the batch at hand *without* updating the
moving averages (Haiku's `is_training=False, test_local_stats=True`); the adversarial pass alone
runs in training mode and updates them. With `batch_stats_attack=False` the attack uses the
moving averages (`model.eval()` in Zhang et al.'s code) and both loss passes update them.

`y` may be a soft target (label smoothing on generated data, CutMix/MixUp); the CE term uses
it as is. The KL attack needs no integer class, which a mixed image does not have: that is why
DeepMind's code requires the KL attack with CutMix. Its target is the clean prediction by default
(Zhang et al.); DeepMind's code uses the mixed label itself when CutMix is on
(`kl_attack_target='label'`, set by gin/cutmix.gin).
"""
import tensorflow as tf

from rgd import attacks
from rgd.attacks import initializers, losses as attack_losses, optimizers, projections
from rgd.errors import ConfigError
from rgd.training import validation as validation_lib
from rgd.training.objectives import base


def make_pgd(norm, eps, attack_steps, attack_optimizer, attack_step_size, init):
  """The training PGD: 'sign' (step `attack_step_size`, default 2/255 for Linf and
  2.5 * eps / steps for L2, the normalised-gradient step of Madry et al. 2018) or 'adam' (lr
  0.1, divided by 10 after half the steps; seed 001 App. A and DeepMind's experiment.py, the
  default of gin/base.gin), from `init` (rgd.attacks.initializers). Training uses the last
  iterate, as the reference implementations do."""
  if attack_optimizer == "adam":
    half = max(attack_steps // 2, 1)
    opt = optimizers.Adam(optimizers.piecewise([0.1, 0.01], [half]))
  elif attack_optimizer == "sign":
    if attack_step_size is None:
      attack_step_size = 2. / 255 if norm == "linf" else 2.5 * eps / attack_steps
    opt = optimizers.steepest_ascent(norm, attack_step_size)
  else:
    raise ConfigError(f"Objective.attack_optimizer={attack_optimizer!r}: 'sign' or 'adam'")
  return attacks.PGD(opt, attack_steps, init, projections.project_fn(norm, eps), keep_best=False)


def trades_loss(clean_logits, adv_logits, soft_labels, beta):
  """Per-example (total, ce, kl) of TRADES."""
  ce = base.soft_cross_entropy(clean_logits, soft_labels)
  kl = base.kl_divergence(clean_logits, adv_logits)
  return ce + beta * kl, ce, kl


class AdversarialObjective(base.TrainingObjective):
  """Shared by objectives trained on PGD examples: the threat and PGD-40 validation."""

  def validation(self):
    return base.Validation(validation_lib.pgd40_check, self.threat, selects_robust=True)


class Trades(AdversarialObjective):
  """TRADES (module docstring).

  kl_attack_target: what the attack moves away from: 'prediction', the clean softmax (Zhang et
    al.), or 'label', the (soft) training target, which DeepMind's experiment uses with CutMix
    ("regress the attack away from mixed labels").
  Sign-PGD starts near x (`init_stddev` * N(0, 1), Zhang et al.'s code); Adam from a uniform
  point in the ball (DeepMind's `attacks.linf_initialize_fn(epsilon)`).
  """
  name = "trades"

  def __init__(self, beta=6.0, norm="linf", eps=8. / 255, attack_steps=10,
               attack_optimizer="sign", attack_step_size=None, init_stddev=1e-3,
               batch_stats_attack=True, kl_attack_target="prediction"):
    self.threat = base.Threat(norm, eps)
    self.beta = float(beta)
    self.batch_stats_attack = bool(batch_stats_attack)
    if kl_attack_target not in ("prediction", "label"):
      raise ConfigError(f"Objective.kl_attack_target={kl_attack_target!r}: 'prediction' or "
                        "'label'")
    self.kl_attack_target = kl_attack_target
    init = (initializers.normal_init(init_stddev) if attack_optimizer == "sign"
            else initializers.uniform_init(norm, eps))
    self.attack = make_pgd(norm, eps, attack_steps, attack_optimizer, attack_step_size, init)

  def shares_clean_pass(self):
    """In DeepMind's BN mode the attack's target f(x) and the clean term both run the network
    with batch statistics on the same images and weights, so the clean pass serves both and
    one forward pass of the step (1 of the 27 forward-equivalents of TRADES-10) is saved."""
    return self.batch_stats_attack and self.kl_attack_target == "prediction"

  def forward_passes(self):
    """K attack steps (forward + input gradient, 2 K), forward and backward of the clean and
    the adversarial pass (2 x 3), the attack's clean target where it is a pass of its own (1;
    not for a label target): 26 for TRADES-10 in DeepMind's BN mode, 27 in Zhang et al.'s."""
    own_target = self.kl_attack_target == "prediction" and not self.shares_clean_pass()
    return 2 * self.attack.num_steps + 6 + (1 if own_target else 0)

  def adversarial_examples(self, inference_fn, images, soft_labels, seed, init_slice=None,
                           clean_logits=None):
    """x_adv maximising KL(target || f(x')); `clean_logits` are f(x) when already computed."""
    if self.kl_attack_target == "label":
      target = tf.cast(soft_labels, tf.float32)
    else:
      if clean_logits is None:
        clean_logits = inference_fn(images)
      target = tf.stop_gradient(tf.nn.softmax(tf.cast(clean_logits, tf.float32)))
    return base.run_training_attack(self.attack, inference_fn, attack_losses.kl_loss, images,
                                    target, seed, init_slice)

  def losses(self, passes, batch):
    if self.shares_clean_pass():  # the clean pass first, under the tape; the attack unrecorded
      clean_logits = passes.clean(batch.images)
      with passes.unrecorded():
        adv_images = self.adversarial_examples(passes.attack, batch.images, batch.labels,
                                               batch.seed, batch.init_slice, clean_logits)
    else:
      with passes.unrecorded():
        adv_images = self.adversarial_examples(passes.attack, batch.images, batch.labels,
                                               batch.seed, batch.init_slice)
      clean_logits = passes.clean(batch.images)
    adv_logits = passes.train(adv_images)
    total, ce, kl = trades_loss(clean_logits, adv_logits, batch.labels, self.beta)
    return base.Losses({"total": total, "ce": ce, "kl": kl}, clean_logits, adv_logits)


class PgdAT(AdversarialObjective):
  """PGD adversarial training (Madry et al. 2018): CE on PGD examples that maximise CE of the
  hard label, from a uniform start in the ball."""
  name = "pgd_at"

  def __init__(self, norm="linf", eps=8. / 255, attack_steps=10, attack_optimizer="sign",
               attack_step_size=None, batch_stats_attack=True):
    self.threat = base.Threat(norm, eps)
    self.batch_stats_attack = bool(batch_stats_attack)
    self.attack = make_pgd(norm, eps, attack_steps, attack_optimizer, attack_step_size,
                           initializers.uniform_init(norm, eps))

  def adversarial_examples(self, inference_fn, images, soft_labels, seed, init_slice=None,
                           clean_logits=None):
    del clean_logits
    return base.run_training_attack(self.attack, inference_fn, attack_losses.ce_loss, images,
                                    base.hard_labels(soft_labels), seed, init_slice)

  def forward_passes(self):
    """K attack steps (2 K) and forward + backward on x_adv (3); no clean pass."""
    return 2 * self.attack.num_steps + 3

  def losses(self, passes, batch):
    with passes.unrecorded():
      adv_images = self.adversarial_examples(passes.attack, batch.images, batch.labels,
                                             batch.seed, batch.init_slice)
    adv_logits = passes.train(adv_images)
    ce = base.soft_cross_entropy(adv_logits, batch.labels)
    return base.Losses({"total": ce, "ce": ce}, None, adv_logits)
