"""Objectives around an objective: seed 003's corruption stage (AdA, AugMix) and AugMix's
Jensen-Shannon consistency term wrap any objective instead of being a branch inside one.

`Objective(corruption=CorruptionStage(...))` builds Corrupted(inner) and, with the stage's
`jsd_weight`, Corrupted(JensenShannon(inner)): the stage's images replace the clean ones for
every following term, as in the seed's saddle-point problem (Eq. 3), and the stage's two extra
AugMix views feed the JS term.
"""
import tensorflow as tf

from rgd.training.objectives import base
from rgd.errors import ConfigError


def jensen_shannon(*logits):
  """Per-example JS consistency of AugMix (reference `cifar.py` train loop): mean over the
  predictions p_i of KL(p_i || M), M = mean p_i clipped to [1e-7, 1]."""
  probs = [tf.nn.softmax(tf.cast(l, tf.float32)) for l in logits]
  log_m = tf.math.log(tf.clip_by_value(tf.add_n(probs) / len(probs), 1e-7, 1.))
  kls = [tf.reduce_sum(p * (tf.math.log(tf.maximum(p, 1e-30)) - log_m), axis=1) for p in probs]
  return tf.add_n(kls) / len(kls)


class Wrapper(base.TrainingObjective):
  """Forwards every member of the protocol to `inner`; subclasses change one."""

  def __init__(self, inner):
    self.inner = inner

  name = property(lambda self: self.inner.name)
  threat = property(lambda self: self.inner.threat)
  robust = property(lambda self: self.inner.robust)
  batch_stats_attack = property(lambda self: self.inner.batch_stats_attack)
  attack = property(lambda self: self.inner.attack)

  def bind(self, network, step, total_steps):
    self.inner.bind(network, step, total_steps)

  def corrupt(self, attack_fn, batch):
    return self.inner.corrupt(attack_fn, batch)

  def losses(self, passes, batch):
    return self.inner.losses(passes, batch)

  def validation(self):
    return self.inner.validation()

  def adversarial_examples(self, *args, **kwargs):
    return self.inner.adversarial_examples(*args, **kwargs)

  def shares_clean_pass(self):
    return self.inner.shares_clean_pass()

  def run_info(self):
    return self.inner.run_info()


class Corrupted(Wrapper):
  """Runs `stage` (rgd.corruptions.stage.CorruptionStage) on the batch first, with the network
  in the attack's BN mode; its images replace the clean ones, its views (JS term) ride along."""

  def __init__(self, inner, stage):
    super().__init__(inner)
    self.stage = stage

  def corrupt(self, attack_fn, batch):
    images, views = self.stage(attack_fn, batch.images, batch.labels, batch.seed)
    return self.inner.corrupt(attack_fn, batch._replace(images=images, views=views))


class JensenShannon(Wrapper):
  """inner's loss + weight * JS(f(x), f(x_aug1), f(x_aug2)) (AugMix, Hendrycks et al. 2020,
  Eq. 1; weight 12 in its reference), the three training-mode predictions from one pass over
  the concatenated batch, as the reference's train loop. An inner objective whose own training
  pass is on x (standard training) gets that pass's logits for x instead of running another."""

  def __init__(self, inner, weight):
    super().__init__(inner)
    self.weight = float(weight)

  def losses(self, passes, batch):
    if batch.views is None:
      raise ConfigError("JensenShannon: the batch has no AugMix views (the corruption stage "
                       "returns them when its jsd_weight > 0)")
    views = list(batch.views)
    all_logits = tf.split(passes.train(tf.concat([batch.images] + views, 0)), 1 + len(views))
    train = passes.train

    def train_or_shared(x):
      return all_logits[0] if x is batch.images else train(x)
    out = self.inner.losses(passes._replace(train=train_or_shared), batch)
    jsd = jensen_shannon(*all_logits)
    parts = dict(out.parts, total=out.parts["total"] + self.weight * jsd, jsd=jsd)
    return base.Losses(parts, out.clean_logits, out.adv_logits)
