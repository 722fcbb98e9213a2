"""MART, "Misclassification Aware adveRsarial Training" (Wang et al., "Improving adversarial
robustness requires revisiting misclassified examples", ICLR 2020), as the authors' `mart_loss`
(github.com/YisenWang/MART, mart.py) computes it:

    L = 1/B sum_i [ BCE(p_adv_i, y_i) + beta * KL(p_i || p_adv_i) * (1 - p_i[y_i]) ],
    BCE(p_adv, y) = -log p_adv[y] - log(1 - max_{k != y} p_adv[k]),

p = softmax(f(x)) clean, p_adv = softmax(f(x_adv)). The reference's numerical guards are kept:
log(1.0001 - p_adv[k*] + 1e-12) for the second BCE term, log(p_adv + 1e-12) in the KL (whose
target p enters as p * log p, zero where p is 0, as torch's KLDivLoss), and the weight
1.0000001 - p[y]. The KL is summed over classes per example, weighted, then averaged over the
batch with the BCE (the trainer's sum / global batch), as the reference's
(1 / batch_size) * sum(...). The weight is not detached: the reference back-propagates through
p[y] too.

The attack is the reference's: PGD on the CE of the hard label, sign steps of 2/255 (their
train_wrn.py), 10 steps, eps 8/255, from x + 0.001 * N(0, 1). Labels are used as classes
(argmax of the soft target): MART is defined for hard labels.
"""
import tensorflow as tf

from rgd.attacks import initializers
from rgd.training.objectives import adversarial, base


def mart_loss(clean_logits, adv_logits, labels, beta):
  """Per-example (total, bce, weighted kl) of MART; `labels` int [B]."""
  num_classes = adv_logits.shape[-1]
  adv_logits = tf.cast(adv_logits, tf.float32)
  adv_probs = tf.nn.softmax(adv_logits)
  nat_probs = tf.nn.softmax(tf.cast(clean_logits, tf.float32))
  y = tf.one_hot(labels, num_classes, dtype=tf.float32)
  # The most likely wrong class: the top class unless it is y, then the second.
  best_wrong = tf.argmax(adv_probs - 2.0 * y, axis=1, output_type=tf.int32)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, adv_logits)
  wrong_p = tf.reduce_sum(adv_probs * tf.one_hot(best_wrong, num_classes), axis=1)
  bce = ce - tf.math.log(1.0001 - wrong_p + 1e-12)
  log_nat = tf.math.log(tf.where(nat_probs > 0, nat_probs, 1.0))
  kl = tf.reduce_sum(nat_probs * (log_nat - tf.math.log(adv_probs + 1e-12)), axis=1)
  true_probs = tf.reduce_sum(nat_probs * y, axis=1)
  weighted_kl = kl * (1.0000001 - true_probs)
  return bce + beta * weighted_kl, bce, weighted_kl


class Mart(adversarial.PgdAT):
  """MART (module docstring): `beta` 6 and the attack of the reference by default. Its attack
  is PGD-AT's (CE on the hard label, `PgdAT.adversarial_examples`) from the reference's start,
  x + 0.001 * N(0, 1), not PGD-AT's uniform one."""
  name = "mart"

  def __init__(self, beta=6.0, norm="linf", eps=8. / 255, attack_steps=10,
               attack_optimizer="sign", attack_step_size=None, init_stddev=1e-3,
               batch_stats_attack=True):
    self.threat = base.Threat(norm, eps)
    self.beta = float(beta)
    self.batch_stats_attack = bool(batch_stats_attack)
    self.attack = adversarial.make_pgd(norm, eps, attack_steps, attack_optimizer,
                                       attack_step_size, initializers.normal_init(init_stddev))

  def forward_passes(self):
    """PGD-AT's attack (2 K) and forward + backward on both x and x_adv (2 x 3)."""
    return 2 * self.attack.num_steps + 6

  def losses(self, passes, batch):
    with passes.unrecorded():
      adv_images = self.adversarial_examples(passes.attack, batch.images, batch.labels,
                                             batch.seed, batch.init_slice)
    clean_logits = passes.clean(batch.images)
    adv_logits = passes.train(adv_images)
    total, bce, kl = mart_loss(clean_logits, adv_logits, base.hard_labels(batch.labels),
                               self.beta)
    return base.Losses({"total": total, "bce": bce, "kl": kl}, clean_logits, adv_logits)
