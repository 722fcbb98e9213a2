"""APGD's schedule (checkpoints, halving and restart rule) and the DLR losses by hand."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from rgd.attacks import losses
from rgd.attacks.apgd import APGD, checkpoints
from rgd.errors import ConfigError


def test_checkpoints_for_100_steps_equal_autoattack():
  # Croce & Hein 2020, Sec. 3.2: p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
  assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_checkpoints_follow_the_recurrence_for_other_lengths():
  # 1000 steps: intervals 220, 190, 160, ... shrink by 30 down to 60.
  got = checkpoints(1000)
  assert np.diff([0] + got).tolist() == [220, 190, 160, 130, 100, 70] + [60] * 2
  assert checkpoints(5) == [1, 2, 3, 4, 5]


def _mlp(seed=0, hidden=16, classes=10, shape=(4, 4, 3)):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape)
  h = keras.layers.Dense(hidden, activation="tanh")(keras.layers.Flatten()(inputs))
  return keras.Model(inputs, keras.layers.Dense(classes)(h))


def _traced_run(attack, model, x, labels, loss_fn):
  fn = tf.function(lambda x, y: attack.run_loss(lambda t: model(t), loss_fn, x, y,
                                           tf.constant([5, 6]), trace=True))
  out = fn(tf.constant(x), tf.constant(labels))
  return {k: v.numpy() for k, v in out[3].items()}


def test_constant_loss_halves_at_every_checkpoint():
  """A constant model never increases the loss: condition 1 holds at every checkpoint."""
  inputs = keras.Input((4, 4, 3))
  dense = keras.layers.Dense(10, kernel_initializer="zeros")
  model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
  eps = 0.1
  attack = APGD("linf", eps, "ce", num_steps=100)
  x = np.full((2, 4, 4, 3), 0.5, np.float32)
  tr = _traced_run(attack, model, x, np.array([0, 1], np.int32), losses.ce_loss)
  expected, step = [], 2 * eps
  for i in range(100):
    expected.append(step)
    if i + 1 in checkpoints(100):
      step /= 2
  np.testing.assert_allclose(tr["step"][:, 0], expected, rtol=1e-6)
  assert tr["reduced"][:, 0].tolist() == [i + 1 in checkpoints(100) for i in range(100)]


@pytest.mark.parametrize("norm,rho", [("linf", 0.75), ("l2", 0.75), ("linf", 0.1)])
def test_halving_and_restart_follow_the_rule(norm, rho):
  """The trace of a nonlinear model replays the rule: at checkpoint j with interval k, halve
  iff (#{t in interval: loss_t > loss_(t-1)} <= rho k) or (the step was not halved at the
  last checkpoint and the best loss has not improved since); then restart from the best.
  AutoAttack's rho = 0.75 halves almost always here; rho = 0.1 exercises the other branches."""
  model = _mlp()
  rng = np.random.RandomState(0)
  x = rng.uniform(0, 1, (8, 4, 4, 3)).astype(np.float32)
  labels = model(x).numpy().argmax(1).astype(np.int32)
  eps = 0.3 if norm == "linf" else 1.5
  attack = APGD(norm, eps, "dlr", num_steps=100, rho=rho)
  tr = _traced_run(attack, model, x, labels, losses.dlr_loss)
  loss = np.concatenate([tr["loss_init"][None], tr["loss"]])     # [101, B]
  best = np.maximum.accumulate(loss, axis=0)
  step = np.full(len(x), 2 * eps)
  reduced_last = np.ones(len(x), bool)
  best_last = loss[0].copy()
  prev, fired = 0, {"cond1": 0, "cond2": 0, "none": 0}
  for i in range(100):
    np.testing.assert_allclose(tr["step"][i], step, rtol=1e-6)
    if i + 1 in checkpoints(100):
      k = i + 1 - prev
      ups = (loss[prev + 1:i + 2] > loss[prev:i + 1]).sum(0)
      cond1 = ups <= rho * k
      cond2 = ~reduced_last & (best_last >= best[i + 1])
      reduce = cond1 | cond2
      np.testing.assert_array_equal(tr["reduced"][i], reduce)
      fired["cond1"] += cond1.sum()
      fired["cond2"] += (cond2 & ~cond1).sum()
      fired["none"] += (~reduce).sum()
      np.testing.assert_array_equal(tr["x"][i][reduce], tr["x_best"][i][reduce])
      step = np.where(reduce, step / 2, step)
      reduced_last, best_last, prev = reduce, best[i + 1], i + 1
    else:
      assert not tr["reduced"][i].any()
  assert fired["cond1"] > 0, fired
  if rho < 0.5:
    assert fired["cond2"] > 0 and fired["none"] > 0, fired


def test_dlr_loss_equals_hand_computation():
  logits = tf.constant([[1.0, 4.0, 2.0, 0.5], [3.0, 1.0, 2.5, -1.0]])
  labels = tf.constant([1, 2])
  # Example 0: label is the top logit: -(4 - 2) / (4 - 1) ; example 1: -(2.5 - 3) / (3 - 1).
  expected = [-(4.0 - 2.0) / (4.0 - 1.0), -(2.5 - 3.0) / (3.0 - 1.0)]
  np.testing.assert_allclose(losses.dlr_loss(logits, labels).numpy(), expected, rtol=1e-6)


def test_targeted_dlr_loss_equals_hand_computation():
  logits = tf.constant([[1.0, 4.0, 2.0, 0.5, 3.0], [3.0, 1.0, 2.5, -1.0, 0.0]])
  labels = tf.constant([1, 2])
  targets = tf.constant([4, 0])
  # Sorted: [4, 3, 2, 1, 0.5] and [3, 2.5, 1, 0, -1]; denominators z1 - (z3 + z4) / 2.
  expected = [-(4.0 - 3.0) / (4.0 - (2.0 + 1.0) / 2), -(2.5 - 3.0) / (3.0 - (1.0 + 0.0) / 2)]
  np.testing.assert_allclose(losses.targeted_dlr_loss(logits, labels, targets).numpy(),
                             expected, rtol=1e-6)


def test_bad_arguments():
  with pytest.raises(ConfigError, match="norm"):
    APGD("l1", 0.1)
  with pytest.raises(ConfigError, match="loss"):
    APGD("linf", 0.1, loss="hinge")
