"""TRADES objective: loss against a numpy hand computation, inner maximisation invariants."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from rgd.training import objectives
from rgd.attacks import losses
from rgd.errors import ConfigError


def _np_log_softmax(z):
  z = z - z.max(1, keepdims=True)
  return z - np.log(np.exp(z).sum(1, keepdims=True))


def _tiny_linear_model(d=12, k=3, seed=0):
  inputs = keras.Input((2, 2, 3))
  x = keras.layers.Flatten()(inputs)
  logits = keras.layers.Dense(k, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
                              bias_initializer="zeros")(x)
  return keras.Model(inputs, logits)


def test_trades_loss_matches_hand_computation():
  rng = np.random.RandomState(0)
  clean = rng.randn(5, 4).astype(np.float32)
  adv = rng.randn(5, 4).astype(np.float32)
  labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
  labels[4] = [0.25, 0.25, 0.5, 0.0]  # a soft (mixed) target
  total, ce, kl = objectives.trades_loss(clean, adv, labels, beta=6.0)
  lp, lq = _np_log_softmax(clean.astype(np.float64)), _np_log_softmax(adv.astype(np.float64))
  ce_np = -(labels * lp).sum(1)
  kl_np = (np.exp(lp) * (lp - lq)).sum(1)
  np.testing.assert_allclose(ce, ce_np, rtol=1e-5)
  np.testing.assert_allclose(kl, kl_np, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(total, ce_np + 6.0 * kl_np, rtol=1e-5)


def test_objective_loss_takes_clean_and_adversarial_logits_from_their_passes():
  model = _tiny_linear_model()
  obj = objectives.Objective(kind="trades", beta=2.0, attack_steps=2, batch_stats_attack=False)
  x = tf.random.stateless_uniform([4, 2, 2, 3], [1, 2])
  y = tf.one_hot([0, 1, 2, 0], 3)
  seed = tf.constant([5, 6])
  attack_fn = lambda z: model(z, training=False)
  x_adv = obj.adversarial_examples(attack_fn, x, y, seed)
  assert float(tf.reduce_max(tf.abs(x_adv - x))) > 0
  calls = []
  clean_fn = lambda z: calls.append("clean") or model(z)
  train_fn = lambda z: calls.append("train") or model(z, training=True)
  parts, clean_logits, adv_logits = obj.losses(
      objectives.Passes(attack_fn, clean_fn, train_fn), objectives.StepBatch(x, y, seed))
  assert calls == ["clean", "train"]  # the updating pass comes last, on x_adv only
  np.testing.assert_allclose(clean_logits, model(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(adv_logits, model(x_adv), rtol=1e-5, atol=1e-6)
  total, _, _ = objectives.trades_loss(model(x), model(x_adv), y, 2.0)
  np.testing.assert_allclose(parts["total"], total, rtol=1e-5)


@pytest.mark.parametrize("norm,eps,optimizer", [("linf", 8 / 255, "sign"),
                                                ("linf", 8 / 255, "adam"),
                                                ("l2", 128 / 255, "sign")])
def test_inner_maximisation_stays_in_ball_and_raises_kl(norm, eps, optimizer):
  model = _tiny_linear_model(seed=3)
  obj = objectives.Objective(kind="trades", norm=norm, eps=eps, attack_steps=10,
                         attack_optimizer=optimizer)
  # Include pixels at 0 and 1 so that the box constraint binds.
  x = tf.random.stateless_uniform([16, 2, 2, 3], [4, 5])
  x = tf.where(x < 0.2, 0.0, tf.where(x > 0.8, 1.0, x))
  fn = lambda z: model(z, training=False)
  x_adv = obj.adversarial_examples(fn, x, tf.one_hot(tf.zeros(16, tf.int32), 3),
                                   tf.constant([0, 0]))
  delta = (x_adv - x).numpy().reshape(16, -1)
  assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
  if norm == "linf":
    assert np.abs(delta).max() <= eps + 1e-6
  else:
    assert np.linalg.norm(delta, axis=1).max() <= eps + 1e-5
  p = tf.nn.softmax(fn(x))
  kl_adv = losses.kl_loss(fn(x_adv), p).numpy()
  kl_start = losses.kl_loss(fn(x), p).numpy()
  assert np.all(kl_adv >= kl_start - 1e-7)
  # Far above a random point of the ball: the attack climbs the KL.
  x_rand = tf.clip_by_value(x + tf.random.stateless_uniform(x.shape, [7, 7], -eps, eps), 0, 1)
  if norm == "l2":
    x_rand = x + (x_rand - x) * eps / tf.norm(tf.reshape(x_rand - x, [16, -1]), axis=1)[:, None,
                                                                                      None, None]
    x_rand = tf.clip_by_value(x_rand, 0, 1)
  kl_rand = losses.kl_loss(fn(x_rand), p).numpy()
  assert kl_adv.mean() > 5 * kl_rand.mean() > 0


def test_standard_objective_has_no_attack_and_plain_ce():
  model = _tiny_linear_model()
  obj = objectives.Objective(kind="standard")
  x = tf.random.stateless_uniform([3, 2, 2, 3], [1, 1])
  y = tf.one_hot([0, 1, 2], 3)
  assert obj.adversarial_examples(model, x, y, tf.constant([0, 0])) is None
  assert obj.attack is None and obj.threat is None
  parts, clean_logits, adv_logits = obj.losses(objectives.Passes(model, model, model),
                                               objectives.StepBatch(x, y, tf.constant([0, 0])))
  assert adv_logits is None and set(parts) == {"total", "ce"}
  expected = tf.keras.losses.categorical_crossentropy(y, model(x), from_logits=True)
  np.testing.assert_allclose(parts["total"], expected, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [(dict(kind="nope"), "Objective.kind='nope'"),
                                          (dict(eps=0.0), "eps"),
                                          (dict(attack_optimizer="lbfgs"), "attack_optimizer"),
                                          (dict(kl_attack_target="logits"), "kl_attack_target")])
def test_objective_rejects_bad_settings(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    objectives.Objective(**kwargs)


def test_kl_attack_can_target_the_soft_label():
  """DeepMind's CutMix setting: the attack maximises KL(y_mixed || f(x'))."""
  model = _tiny_linear_model(seed=5)
  fn = lambda z: model(z, training=False)
  x = tf.random.stateless_uniform([6, 2, 2, 3], [8, 9])
  y = tf.constant([[0.3, 0.7, 0.0]] * 6)
  obj = objectives.Objective(kl_attack_target="label", attack_steps=10)
  x_adv = obj.adversarial_examples(fn, x, y, tf.constant([1, 2]))
  assert np.all(losses.kl_loss(fn(x_adv), y).numpy() >= losses.kl_loss(fn(x), y).numpy() - 1e-6)
  other = objectives.Objective(attack_steps=10).adversarial_examples(fn, x, y, tf.constant([1, 2]))
  assert not np.allclose(x_adv.numpy(), other.numpy())


@pytest.mark.parametrize("optimizer,uniform", [("adam", True), ("sign", False)])
def test_attack_start_follows_the_reference(optimizer, uniform):
  """Adam starts uniformly in the ball (DeepMind's experiment.py, linf_initialize_fn); sign-PGD
  TRADES at 0.001 * N(0, 1) (Zhang et al.)."""
  eps = 8 / 255
  objective = objectives.Objective(eps=eps, attack_optimizer=optimizer)
  x = tf.zeros([64, 8, 8, 3])
  delta = objective.attack.initialize_fn(x, tf.constant([3, 4])).numpy()
  if uniform:
    assert np.abs(delta).max() <= eps
    # U(-eps, eps) has std eps / sqrt(3).
    assert abs(delta.std() / (eps / np.sqrt(3)) - 1) < 0.02
  else:
    assert abs(delta.std() / 1e-3 - 1) < 0.02


def test_pgd40_learning_rates_are_optax_products():
  """optax.piecewise_constant_schedule(.1, {20: .1, 30: .01}) multiplies scales: 0.1, 0.01,
  1e-4."""
  from rgd.attacks import pgd  # pylint: disable=g-import-not-at-top
  lr = pgd.pgd40_adam_margin().optimizer.learning_rate
  got = [float(lr(tf.constant(s))) for s in (0, 19, 20, 29, 30, 39)]
  np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 1e-4, 1e-4], rtol=1e-6)
