"""Training objectives: TRADES (Zhang et al. 2019), PGD-AT (Madry et al. 2018), standard CE.

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
import gin
import tensorflow as tf

from rgd import attacks
from rgd.attacks import initializers, losses, optimizers, projections
from rgd.certified import objective as certified_objective

# 'gloro' and 'linf_dist' are the certified objectives of seed 004 (rgd/certified/objective.py).
OBJECTIVES = ("trades", "pgd_at", "standard") + certified_objective.KINDS


def soft_cross_entropy(logits, soft_labels):
  """Per-example CE with soft targets [B, K] (equals sparse CE for one-hot targets)."""
  return tf.nn.softmax_cross_entropy_with_logits(soft_labels, logits)


def kl_divergence(p_logits, q_logits):
  """Per-example KL(softmax(p_logits) || softmax(q_logits))."""
  log_p = tf.nn.log_softmax(p_logits)
  log_q = tf.nn.log_softmax(q_logits)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=1)


def trades_loss(clean_logits, adv_logits, soft_labels, beta):
  """Per-example (total, ce, kl) of TRADES."""
  ce = soft_cross_entropy(clean_logits, soft_labels)
  kl = kl_divergence(clean_logits, adv_logits)
  return ce + beta * kl, ce, kl


def jensen_shannon(*logits):
  """Per-example JS consistency of AugMix (reference `cifar.py` train loop): mean over the
  predictions p_i of KL(p_i || M), M = mean p_i clipped to [1e-7, 1]."""
  probs = [tf.nn.softmax(tf.cast(l, tf.float32)) for l in logits]
  log_m = tf.math.log(tf.clip_by_value(tf.add_n(probs) / len(probs), 1e-7, 1.))
  kls = [tf.reduce_sum(p * (tf.math.log(tf.maximum(p, 1e-30)) - log_m), axis=1) for p in probs]
  return tf.add_n(kls) / len(kls)


@gin.configurable
class Objective:
  """What the training step minimises, and the attack that builds its adversarial examples.

  kind: 'trades' (default), 'pgd_at' (CE on PGD examples) or 'standard' (clean CE, no attack;
    the non-robust pseudo-labeller of seed 001 App. D).
  kl_attack_target: what TRADES' attack moves away from: 'prediction', the clean softmax
    (Zhang et al.), or 'label', the (soft) training target, which DeepMind's experiment uses
    with CutMix ("regress the attack away from mixed labels").
  attack_optimizer: 'sign' (step `attack_step_size`, default 2/255 for Linf; start
    `init_stddev` * N(0, 1)) or 'adam' (lr 0.1, divided by 10 after half the steps, uniform start
    in the ball; seed 001 App. A and DeepMind's experiment.py, the default of gin/base.gin).
    For L2 'sign' means the
    normalised-gradient step (default 2.5 * eps / steps, Madry et al. 2018).
  corruption: an `rgd.corruptions.stage.CorruptionStage` (AdA, AugMix, JS term; seed 003) run
    on the images before everything else; its images replace the clean ones.
  """

  def __init__(self, kind="trades", beta=6.0, norm="linf", eps=8. / 255, attack_steps=10,
               attack_optimizer="sign", attack_step_size=None, init_stddev=1e-3,
               batch_stats_attack=True, kl_attack_target="prediction", corruption=None):
    if kind not in OBJECTIVES:
      raise ValueError(f"Unknown objective {kind!r}; expected one of {OBJECTIVES}")
    if kind != "standard" and not 0.0 < eps <= 1.0:
      raise ValueError(f"eps must be in (0, 1], got {eps}")
    self.kind, self.beta, self.norm, self.eps = kind, float(beta), norm, float(eps)
    self.batch_stats_attack = bool(batch_stats_attack)
    if kl_attack_target not in ("prediction", "label"):
      raise ValueError(f"kl_attack_target must be 'prediction' or 'label', got "
                       f"{kl_attack_target!r}")
    self.kl_attack_target = kl_attack_target
    self.corruption = corruption
    if corruption is not None and corruption.jsd_weight and kind != "standard":
      raise ValueError("Objective: the AugMix JS term (CorruptionStage.jsd_weight) is only "
                       "defined with kind='standard'")
    self.certified = None
    if kind in certified_objective.KINDS:
      self.certified = certified_objective.CertifiedObjective(kind, eps)
      self.attack = None
      return
    if kind == "standard":
      self.attack = None
      return
    if attack_optimizer == "adam":
      half = max(attack_steps // 2, 1)
      opt = optimizers.Adam(optimizers.piecewise([0.1, 0.01], [half]))
    elif attack_optimizer == "sign":
      if attack_step_size is None:
        # 2/255 for 8/255 and 10 steps (seed 001 App. A); 2.5 * eps / steps for L2.
        attack_step_size = 2. / 255 if norm == "linf" else 2.5 * eps / attack_steps
      opt = optimizers.steepest_ascent(norm, attack_step_size)
    else:
      raise ValueError(f"Unknown attack_optimizer {attack_optimizer!r}; 'sign' or 'adam'")
    # Sign-PGD TRADES starts near x (0.001 * N(0, 1), Zhang et al.'s code). Adam starts from a
    # uniform point in the ball, as DeepMind's experiment.py (`initialize_fn=
    # attacks.linf_initialize_fn(epsilon)`), and PGD-AT does too (Madry et al.).
    init = (initializers.normal_init(init_stddev)
            if kind == "trades" and attack_optimizer == "sign"
            else initializers.uniform_init(norm, eps))
    # Training uses the last iterate, as the reference implementations do.
    self.attack = attacks.PGD(opt, attack_steps, init, projections.project_fn(norm, eps),
                              keep_best=False)

  def bind(self, network, step, total_steps):
    """Certified kinds need the online network and the step (schedules); others ignore it."""
    if self.certified is not None:
      self.certified.bind(network, step, total_steps)

  def corrupt(self, inference_fn, images, soft_labels, seed):
    """(images, views) after the corruption stage (seed 003), or (images, None) without it."""
    if self.corruption is None:
      return images, None
    return self.corruption(inference_fn, images, soft_labels, seed)

  def shares_clean_pass(self):
    """Whether TRADES' clean logits can serve as the attack's target too: in DeepMind's BN mode
    the attack and the clean term both run the network with batch statistics on the same images
    and weights, so the target f(x) is the clean pass itself, and one forward pass of the step
    (1 of the 27 forward-equivalents of TRADES-10) need not run twice. Left out with a
    corruption stage (seed 003), whose views take their own path through the loss."""
    return (self.kind == "trades" and self.batch_stats_attack and
            self.kl_attack_target == "prediction" and self.corruption is None)

  def adversarial_examples(self, inference_fn, images, soft_labels, seed, init_slice=None,
                           clean_logits=None):
    """x_adv from the model in inference mode (`inference_fn`); None for 'standard'.
    `init_slice` is passed to the attack (see `PGD.__call__`). `clean_logits`, when given
    (`shares_clean_pass`), are f(x) for the KL target instead of another pass. Certified kinds
    have no attack; they return `images` so that the trainer reports their worst-case
    (verified) accuracy."""
    if self.certified is not None:
      return images
    if self.attack is None:
      return None
    if self.kind == "trades":
      if self.kl_attack_target == "label":
        target = tf.cast(soft_labels, tf.float32)
      else:
        if clean_logits is None:
          clean_logits = inference_fn(images)
        target = tf.stop_gradient(tf.nn.softmax(tf.cast(clean_logits, tf.float32)))
      loss_fn, labels = losses.kl_loss, target
    else:
      loss_fn, labels = losses.ce_loss, tf.argmax(soft_labels, axis=1, output_type=tf.int32)
    return tf.stop_gradient(self.attack(inference_fn, images, labels, seed, loss_fn=loss_fn,
                                        init_slice=init_slice))

  def loss(self, clean_fn, train_fn, images, adv_images, soft_labels, views=None,
           clean_logits=None):
    """Per-example losses (dict of [B] tensors: total, ce, kl) and the clean and adversarial
    logits. `train_fn` is the network in training mode (it updates BN statistics); `clean_fn`
    gives TRADES' clean logits (see the module docstring for the BN modes), unless they are
    passed in `clean_logits` (computed under the same gradient tape)."""
    if self.certified is not None:
      return self.certified.loss(train_fn, images, soft_labels)
    if views is not None:  # AugMix's JS term: [x, aug1, aug2] in one pass, as its reference.
      all_logits = tf.split(train_fn(tf.concat([images] + list(views), 0)), 1 + len(views))
      ce = soft_cross_entropy(all_logits[0], soft_labels)
      jsd = jensen_shannon(*all_logits)
      return ({"total": ce + self.corruption.jsd_weight * jsd, "ce": ce, "jsd": jsd},
              all_logits[0], all_logits[0])
    if self.kind == "standard":
      logits = train_fn(images)
      ce = soft_cross_entropy(logits, soft_labels)
      return {"total": ce, "ce": ce}, logits, logits
    if self.kind == "pgd_at":
      adv_logits = train_fn(adv_images)
      ce = soft_cross_entropy(adv_logits, soft_labels)
      return {"total": ce, "ce": ce}, None, adv_logits
    if clean_logits is None:
      clean_logits = clean_fn(images)
    adv_logits = train_fn(adv_images)
    total, ce, kl = trades_loss(clean_logits, adv_logits, soft_labels, self.beta)
    return {"total": total, "ce": ce, "kl": kl}, clean_logits, adv_logits
