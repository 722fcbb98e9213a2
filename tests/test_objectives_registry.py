"""The objectives' protocol and registry: a new objective is one class and a registry entry; MART
against a numpy hand computation; the threat each objective records; validation choices."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd.errors import ConfigError
from rgd.evaluation import target
from rgd.training import objectives, validation
from rgd.training.trainer import RobustTrainer


def _dense_net(k=4, seed=0):
  inputs = keras.Input((2, 2, 3))
  x = keras.layers.Flatten()(inputs)
  logits = keras.layers.Dense(k, kernel_initializer=keras.initializers.RandomNormal(
      stddev=1.0, seed=seed), bias_initializer="zeros")(x)
  return keras.Model(inputs, logits)


class _ScaledCE(objectives.TrainingObjective):
  """A throwaway objective: `beta` * CE of the clean training pass (defined here only)."""

  def __init__(self, beta=1.0, norm="linf", eps=8. / 255):
    self.beta = float(beta)
    self.threat = objectives.Threat(norm, eps)

  def losses(self, passes, batch):
    logits = passes.train(batch.images)
    ce = objectives.soft_cross_entropy(logits, batch.labels)
    return objectives.Losses({"total": self.beta * ce, "ce": ce}, logits, None)

  def validation(self):
    return objectives.Validation(validation.pgd40_check, self.threat, selects_robust=False)


@pytest.fixture
def scaled_ce():
  objectives.register("scaled_ce", _ScaledCE)
  yield _ScaledCE
  objectives.unregister("scaled_ce")


def test_an_objective_defined_in_a_test_trains_one_step(scaled_ce):
  # Built through the gin factory: it receives the Objective parameters it names (beta, norm,
  # eps) and ignores the others.
  objective = objectives.Objective(kind="scaled_ce", beta=3.0, eps=4. / 255, attack_steps=7)
  assert isinstance(objective, scaled_ce) and objective.beta == 3.0
  assert objective.run_info() == dict(objective="scaled_ce", norm="linf", eps=4. / 255,
                                      threat={"norm": "linf", "eps": 4. / 255})
  keras.utils.set_random_seed(0)
  net = _dense_net()
  x = tf.random.stateless_uniform([6, 2, 2, 3], [1, 2])
  y = tf.one_hot([0, 1, 2, 3, 0, 1], 4)
  before = [w.numpy().copy() for w in net.trainable_weights]
  logits = net(x).numpy().astype(np.float64)
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  ce_by_hand = -(y.numpy() * log_p).sum()
  trainer = RobustTrainer(net, objective, global_batch_size=6, weight_decay=0.0)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1))
  logs = trainer.train_step({"image": x, "label": y})
  assert float(logs["ce"]) == pytest.approx(ce_by_hand, rel=1e-5)
  assert float(logs["total"]) == pytest.approx(3.0 * ce_by_hand, rel=1e-5)
  assert float(logs["count"]) == 6 and "clean_correct" in logs and "adv_correct" not in logs
  assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, net.trainable_weights))


def test_register_refuses_a_non_objective_and_a_taken_name():
  with pytest.raises(TypeError):
    objectives.register("nope", dict)
  with pytest.raises(ValueError, match="already registered"):
    objectives.register("trades", _ScaledCE)


def _np_softmax(z):
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


def test_mart_loss_matches_a_hand_computation():
  """3 examples, 4 classes. Per example i (Wang et al. 2020, the authors' mart.py):
  BCE = -log p_adv[y] - log(1.0001 - max_{k!=y} p_adv[k] + 1e-12),
  KL = sum_k p[k] (log p[k] - log(p_adv[k] + 1e-12)), weighted by 1.0000001 - p[y]."""
  clean = np.array([[2.0, 0.5, -1.0, 0.0],
                    [0.1, 0.2, 3.0, -0.5],
                    [1.0, 1.0, 1.0, 1.0]], np.float32)
  adv = np.array([[0.5, 1.5, -0.5, 0.2],   # the top class (1) is wrong
                  [0.0, 0.3, 2.5, 0.1],    # the top class (2) is y: the second one counts
                  [2.0, -1.0, 0.5, 0.4]], np.float32)
  y = np.array([0, 2, 3])
  beta = 6.0
  p, q = _np_softmax(clean.astype(np.float64)), _np_softmax(adv.astype(np.float64))
  bce, kl = np.zeros(3), np.zeros(3)
  for i in range(3):
    wrong = max(q[i, k] for k in range(4) if k != y[i])
    bce[i] = -np.log(q[i, y[i]]) - np.log(1.0001 - wrong + 1e-12)
    kl[i] = sum(p[i, k] * (np.log(p[i, k]) - np.log(q[i, k] + 1e-12)) for k in range(4))
    kl[i] *= 1.0000001 - p[i, y[i]]
  total, got_bce, got_kl = objectives.mart_loss(clean, adv, tf.constant(y, tf.int32), beta)
  np.testing.assert_allclose(got_bce, bce, rtol=1e-5)
  np.testing.assert_allclose(got_kl, kl, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(total, bce + beta * kl, rtol=1e-5)
  # The batch loss of the reference: the mean over examples of the per-example total.
  assert float(tf.reduce_mean(total)) == pytest.approx((bce + beta * kl).mean(), rel=1e-5)


def test_mart_trains_one_step_with_its_attack():
  objective = objectives.Objective(kind="mart", attack_steps=3)
  assert isinstance(objective, objectives.Mart) and objective.beta == 6.0
  assert objective.threat == objectives.Threat("linf", 8. / 255)
  keras.utils.set_random_seed(1)
  net = _dense_net()
  x = tf.random.stateless_uniform([4, 2, 2, 3], [3, 4])
  y = tf.one_hot([0, 1, 2, 3], 4)
  seed = tf.constant([1, 1])
  x_adv = objective.adversarial_examples(lambda z: net(z), x, y, seed)
  assert 0 < float(tf.reduce_max(tf.abs(x_adv - x))) <= 8. / 255 + 1e-6
  # losses() with passes that are the same network: the parts match mart_loss of its passes.
  fn = lambda z: net(z)
  out = objective.losses(objectives.Passes(fn, fn, fn), objectives.StepBatch(x, y, seed))
  total, _, _ = objectives.mart_loss(net(x), net(x_adv), tf.constant([0, 1, 2, 3]), 6.0)
  np.testing.assert_allclose(out.parts["total"], total, rtol=1e-5)
  trainer = RobustTrainer(net, objective, global_batch_size=4)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1))
  logs = trainer.train_step({"image": x, "label": y})
  assert set(logs) >= {"total", "bce", "kl", "clean_correct", "adv_correct", "count"}
  assert np.isfinite(float(logs["total"]))


def test_each_objective_records_its_threat_and_validation():
  trades = objectives.Objective(kind="trades", norm="l2", eps=0.5)
  assert trades.run_info() == dict(objective="trades", norm="l2", eps=0.5,
                                   threat={"norm": "l2", "eps": 0.5})
  spec = trades.validation()
  assert spec.check is validation.pgd40_check and spec.selects_robust
  standard = objectives.Objective(kind="standard")
  assert standard.threat is None and standard.run_info()["threat"] is None
  spec = standard.validation()
  assert not spec.selects_robust and spec.threat == objectives.Threat("linf", 8. / 255)
  gloro = objectives.Objective(kind="gloro", norm="l2", eps=0.5)
  assert gloro.threat == objectives.Threat("l2", 0.5)
  assert gloro.validation().check is validation.certified_check
  linf = objectives.Objective(kind="linf_dist", eps=8. / 255)
  assert linf.threat == objectives.Threat("linf", 8. / 255)
  with pytest.raises(ConfigError, match="NORM = 'l2'"):
    objectives.Objective(kind="gloro", norm="linf")


def test_evaluation_reads_the_recorded_threat_and_old_model_json():
  new = dict(dataset="cifar10", objective="trades", norm="l2", eps=0.5,
             threat={"norm": "l2", "eps": 0.5})
  assert target.resolve_target(new)[1:3] == ("l2", 0.5)
  standard = dict(dataset="cifar10", objective="standard", norm="l2", eps=0.5, threat=None)
  assert target.resolve_target(standard)[1:3] == ("linf", 8 / 255)  # the default target
  # Written before the threat was recorded: a non-robust objective had none.
  assert target.resolve_target(dict(objective="standard", norm="l2", eps=0.5))[1:3] == (
      "linf", 8 / 255)
  assert target.resolve_target(dict(objective="gloro", norm="l2", eps=0.5))[1:3] == ("l2", 0.5)


def _count_passes(objective, k=4):
  """Runs `objective.losses` eagerly on a tiny net, counting calls: each attack call inside the
  attack is a forward and an input gradient (2), one outside (the clean target) a forward (1),
  each recorded clean or training pass a forward and a backward (3)."""
  net = _dense_net(k)
  calls = {"attack": 0, "recorded": 0}
  x = tf.random.stateless_uniform([3, 2, 2, 3], [1, 2])
  labels = tf.one_hot([0, 1, 2], k)

  def attack_fn(images):
    calls["attack"] += 1
    return net(images, training=False)

  def recorded(images):
    calls["recorded"] += 1
    return net(images, training=True)

  with tf.GradientTape() as tape:
    passes = objectives.Passes(attack_fn, recorded, recorded, tape)
    objective.losses(passes, objectives.StepBatch(x, labels, tf.constant([0, 1]), None))
  return calls


@pytest.mark.parametrize("kind,params,attack_calls,recorded,passes", [
    ("trades", {}, 5, 2, 2 * 5 + 6),                            # DeepMind's BN mode: shared
    ("trades", {"kl_attack_target": "label"}, 5, 2, 2 * 5 + 6),  # a given target: no pass
    ("trades", {"batch_stats_attack": False}, 6, 2, 2 * 5 + 6 + 1),  # Zhang's: target pass
    ("pgd_at", {}, 5, 1, 2 * 5 + 3),
    ("mart", {}, 5, 2, 2 * 5 + 6),
    ("standard", {}, 0, 1, 3)])
def test_each_objective_counts_its_own_forward_passes(kind, params, attack_calls, recorded,
                                                      passes):
  """forward_passes() (rgd.bench's FLOPs and MFU) agrees with the passes the step makes."""
  kw = {} if kind == "standard" else dict(attack_steps=5)
  objective = objectives.Objective(kind=kind, **kw, **params)
  assert _count_passes(objective) == {"attack": attack_calls, "recorded": recorded}
  assert objective.forward_passes() == passes


def test_an_objective_that_does_not_count_says_so(scaled_ce):
  assert scaled_ce().forward_passes() is None
