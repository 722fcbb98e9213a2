"""The protocol every training objective follows, and the parts its implementations share.

A training objective is what `rgd.training.trainer.RobustTrainer` minimises. The trainer's
replica step reads, for any objective:

    batch = objective.corrupt(passes.attack, batch)          # identity unless wrapped
    with tape: out = objective.losses(passes, batch)         # parts, clean/adv logits
    loss = sum(out.parts["total"]) / global batch + decay    # scale
    optimizer.apply(gradients)                               # apply

and the training loop and validation read only `threat`, `validation()`, `run_info()` and
`bind`: nothing outside rgd.training.objectives tests which objective it is. A new objective
is one class deriving from `TrainingObjective` plus `objectives.register(name, cls)` (see
docs/training.md "How to add an objective"; rgd/training/objectives/mart.py is the example).
"""
import abc
import collections
import contextlib
import inspect

import tensorflow as tf

from rgd.errors import ConfigError

NORMS = ("linf", "l2")


class Threat(collections.namedtuple("Threat", "norm eps")):
  """The threat model an objective trains for: `norm` ('linf' or 'l2') and radius `eps` in
  pixel units ([0, 1] images). Recorded in model.json, read back by rgd.evaluate/rgd.certify."""

  def __new__(cls, norm, eps):
    if norm not in NORMS:
      raise ConfigError(f"Objective.norm={norm!r}: expected one of {NORMS}")
    eps = float(eps)
    if not 0.0 < eps <= 1.0:
      raise ConfigError(f"Objective.eps={eps}: must be in (0, 1] (images are in [0, 1])")
    return super().__new__(cls, norm, eps)

  def as_json(self):
    return {"norm": self.norm, "eps": self.eps}


class StepBatch(collections.namedtuple("StepBatch", "images labels seed init_slice views")):
  """One replica's batch as the objective sees it: float images [B, H, W, C] in [0, 1], soft
  labels [B, K], the step's stateless int32 [2] `seed`, the attack's `init_slice` (this
  replica's rows of the global batch's random start, `PGD.__call__`) and `views`: extra
  augmented views of the images that a corruption stage adds for a consistency term (else
  None)."""

  def __new__(cls, images, labels, seed, init_slice=None, views=None):
    return super().__new__(cls, images, labels, seed, init_slice, views)


class Passes(collections.namedtuple("Passes", "attack clean train tape")):
  """The network as the objective may call it (`RobustTrainer.network_fns`):

    attack: inference mode for attacks and corruption stages (in DeepMind's BN mode, batch
      statistics without updating the moving averages);
    clean:  the clean term of TRADES-like losses (same BN mode as `attack`);
    train:  training mode, the pass that updates the BN moving averages.

  `tape` is the step's gradient tape (None outside a training step): run attacks inside
  `with passes.unrecorded():` so their passes are not recorded."""

  def __new__(cls, attack, clean, train, tape=None):
    return super().__new__(cls, attack, clean, train, tape)

  def unrecorded(self):
    return self.tape.stop_recording() if self.tape is not None else contextlib.nullcontext()


# parts: dict of per-example [B] float tensors, "total" (what is minimised) included; every part
# is logged as its mean. clean_logits / adv_logits: [B, K] logits whose accuracy is logged as
# clean_accuracy / adv_accuracy, or None where the objective has no such pass.
Losses = collections.namedtuple("Losses", "parts clean_logits adv_logits")

# What validation checks (`check`, a function of rgd.training.validation with the signature of
# `validation.pgd40_check`), against which threat, and whether the robust number (else the clean
# one) chooses the exported model.keras.
Validation = collections.namedtuple("Validation", "check threat selects_robust")


class TrainingObjective(abc.ABC):
  """A training objective. Subclasses set `threat` and implement `losses` and `validation`; the
  rest has defaults.

  Attributes:
    name: the registry key (`objectives.OBJECTIVES`), recorded in model.json.
    threat: `Threat(norm, eps)` trained for, or None (no threat model, e.g. standard training).
    robust: False for an objective without a threat model; how model.json files written before
      `threat` was recorded are read (`objectives.recorded_threat`).
    batch_stats_attack: the BN mode of `Passes` (module docstring of adversarial.py).
    attack: the training attack, or None (read by the loop's image summary and tools).
  """
  name = None
  threat = None
  robust = True
  batch_stats_attack = True
  attack = None

  @classmethod
  def from_objective_params(cls, **params):
    """Builds the objective from `Objective(...)`'s gin parameters: each constructor argument
    whose name is one of them gets its value; the others keep their defaults."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in accepted})

  def bind(self, network, step, total_steps):
    """Called once before training with the online network and the optimizer's step variable
    (for schedules over `total_steps`). Default: nothing to bind."""
    del network, step, total_steps

  def corrupt(self, attack_fn, batch):
    """The batch after a corruption stage (runs before the gradient tape). Default: as is."""
    del attack_fn
    return batch

  @abc.abstractmethod
  def losses(self, passes, batch):
    """`Losses(parts, clean_logits, adv_logits)` of `batch` (`StepBatch`) computed with
    `passes` (`Passes`), under the trainer's gradient tape."""

  @abc.abstractmethod
  def validation(self):
    """`Validation(check, threat, selects_robust)`: how the training loop validates the
    weight-averaged model and which number selects model.keras."""

  def adversarial_examples(self, inference_fn, images, soft_labels, seed, init_slice=None,
                           clean_logits=None):
    """x_adv of the training attack (image summaries, cross-checks), or None without one."""
    del inference_fn, images, soft_labels, seed, init_slice, clean_logits
    return None

  def shares_clean_pass(self):
    """Whether `losses` reuses the clean pass as the attack's target (saves a forward pass)."""
    return False

  def forward_passes(self):
    """Forward-pass equivalents of one step per example (a backward counts 2, an input
    gradient 2: the cost of the step in units of the network's forward FLOPs, which
    rgd.bench turns into model FLOPs and MFU); None where it is not known."""
    return None

  def run_info(self):
    """What model.json records about the objective: its name, the threat (None without one)
    and, as before the threat was recorded, `norm` and `eps`."""
    threat = self.threat
    return dict(objective=self.name, norm=threat.norm if threat else None,
                eps=threat.eps if threat else None, threat=threat.as_json() if threat else None)


def run_training_attack(attack, inference_fn, loss_fn, images, labels, seed, init_slice=None):
  """The one place a training objective calls its attack: x_adv maximising `loss_fn` from
  `images`, with no gradient into it."""
  return tf.stop_gradient(attack(inference_fn, images, labels, seed, loss_fn=loss_fn,
                                 init_slice=init_slice))


def hard_labels(soft_labels):
  """int32 [B] class of each (soft) target: its argmax."""
  return tf.argmax(soft_labels, axis=1, output_type=tf.int32)


def soft_cross_entropy(logits, soft_labels):
  """Per-example CE with soft targets [B, K] (equals sparse CE for one-hot targets)."""
  return tf.nn.softmax_cross_entropy_with_logits(soft_labels, logits)


def kl_divergence(p_logits, q_logits):
  """Per-example KL(softmax(p_logits) || softmax(q_logits))."""
  log_p = tf.nn.log_softmax(p_logits)
  log_q = tf.nn.log_softmax(q_logits)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=1)
