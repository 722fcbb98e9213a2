"""MultiTargeted breaks a model that only one target direction breaks, where untargeted PGD
with the same budget and step rule does not.

Linear model on 8x8x3 images, s a balanced +-1 pattern: z_0 = 0, z_1 = 0.1 <s, x - 0.5> - 1,
z_2 = -<s, x - 0.5> - 3 (class 3 dead). Class 1 is the runner-up but the ball can raise it by
at most 0.1 eps ||s||_* < 1; class 2 starts lower and can rise by eps ||s||_* > 3. The margin
gradient of untargeted PGD points along +s (class 1), which lowers z_2, and a random start
moves z_2 - z_1 by about 0.3 (far less than the gap of 2), so PGD never turns to class 2.
MultiTargeted's second restart targets class 2 and breaks every point.
"""
import numpy as np
import pytest
import tensorflow as tf

from rgd.attacks import losses
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.pgd import PGD

from test_attacks_linear import linear_model

SHAPE = (8, 8, 3)
EPS = {"linf": 0.03, "l2": 0.3}


def _decoy_model(seed=0):
  rng = np.random.RandomState(seed)
  d = int(np.prod(SHAPE))
  s = np.repeat([1.0, -1.0], d // 2)
  rng.shuffle(s)
  weights = np.zeros((d, 4))
  weights[:, 1], weights[:, 2] = 0.1 * s, -s
  bias = np.array([0.0, -1.0, -3.0, -1000.0]) - 0.5 * weights.sum(0)
  return linear_model(weights, bias, SHAPE), s


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_multitargeted_breaks_what_untargeted_pgd_cannot(norm):
  model, s = _decoy_model()
  eps = EPS[norm]
  dual = np.abs(s).sum() if norm == "linf" else np.sqrt((s**2).sum())
  assert 0.1 * eps * dual < 1.0 < 3.0 < eps * dual        # the construction above
  rng = np.random.RandomState(1)
  x = (0.5 + rng.uniform(-0.01, 0.01, (8,) + SHAPE)).astype(np.float32)
  labels = np.zeros(8, np.int32)
  z = model(x).numpy()
  assert (z.argmax(1) == 0).all() and (z[:, 1] > z[:, 2]).all()   # class 1 is the runner-up

  mt = MultiTargeted(norm, eps, num_steps=20, num_restarts=2, num_targets=3)
  model_fn = lambda t: model(t, training=False)
  seed = tf.constant([0, 1])
  x_mt = tf.function(lambda a, b: mt(model_fn, a, b, seed))(x, labels).numpy()
  # The same inner PGD (step rule, schedule, random start), same budget, untargeted margin.
  inner = mt.pgd
  pgd = PGD(inner.optimizer, inner.num_steps, inner.initialize_fn, inner.project_fn,
            keep_misclassified=True, loss_fn=losses.margin_loss, num_restarts=2)
  x_pgd = tf.function(lambda a, b: pgd(model_fn, a, b, seed))(x, labels).numpy()

  assert losses.misclassified(model(x_mt), labels).numpy().all()
  assert not losses.misclassified(model(x_pgd), labels).numpy().any()
  # MultiTargeted went to class 2; PGD pushed class 1 as far as the ball allows.
  assert (model(x_mt).numpy().argmax(1) == 2).all()
  gain1 = model(x_pgd).numpy()[:, 1] - z[:, 1]
  np.testing.assert_allclose(gain1, 0.1 * eps * dual, rtol=2e-2)


def _passing_through_model(eps):
  """s = mean(x - 0.5). Class 0 (the label) z_0 = 0; class 1 z_1 = s / eps - 1.5 (the target:
  runner-up at x0, never above z_0 in the ball); class 2 a bump z_2 = 1 - 2 ((s - eps/2) /
  (0.2 eps))^2, above z_0 only for s near eps/2; class 3 dead. Ascent on z_1 - z_0 raises s
  from about 0 to eps, passing through the bump: a misclassified iterate, then a correct one."""
  def model_fn(x):
    s = tf.reduce_mean(x - 0.5, axis=[1, 2, 3])
    bump = 1.0 - 2.0 * tf.square((s - eps / 2) / (0.2 * eps))
    return tf.stack([tf.zeros_like(s), s / eps - 1.5, bump, tf.fill(tf.shape(s), -1e3)], 1)
  return model_fn


def test_multitargeted_keeps_a_misclassified_iterate_the_run_passed_through():
  eps = 0.03
  model_fn = _passing_through_model(eps)
  x = np.full((8,) + SHAPE, 0.5, np.float32)
  labels = np.zeros(8, np.int32)
  assert (model_fn(x).numpy().argmax(1) == 0).all()
  mt = MultiTargeted("linf", eps, num_steps=20, num_restarts=1, num_targets=1)
  seed = tf.constant([0, 3])
  x_mt = mt(model_fn, x, labels, seed).numpy()
  assert np.abs(x_mt - x).max() <= eps + 1e-6 and x_mt.min() >= 0 and x_mt.max() <= 1
  assert (model_fn(x_mt).numpy().argmax(1) == 2).all()   # the bump, met on the way
  # The run's last iterate is correct again (s at eps): keeping only the best-margin iterate,
  # as before, loses every one of these adversarial examples.
  mt.pgd.keep_misclassified = False
  x_last = mt(model_fn, x, labels, seed).numpy()
  assert (model_fn(x_last).numpy().argmax(1) == 0).all()


def test_restarts_per_target_runs_every_target_num_restarts_times():
  """Only the third target (the 4th-largest clean logit) can be raised: z_0 = 0 (label),
  z_1 = -1, z_2 = -2 (constant), z_3 = <s, x - 0.5> - 3 with eps ||s||_1 > 3. Two runs in
  total target classes 1 and 2 and fail; two runs per target (6) reach class 3."""
  eps = 0.03
  d = int(np.prod(SHAPE))
  s = np.repeat([1.0, -1.0], d // 2).astype(np.float32)
  assert eps * np.abs(s).sum() > 3.0

  def model_fn(x):
    v = tf.reduce_sum(tf.reshape(x - 0.5, [-1, d]) * s, axis=1)
    c = tf.ones_like(v)
    return tf.stack([0 * c, -c, -2 * c, v - 3.0], 1)

  x = np.full((4,) + SHAPE, 0.5, np.float32)
  labels = np.zeros(4, np.int32)
  seed = tf.constant([0, 5])
  total = MultiTargeted("linf", eps, num_steps=10, num_restarts=2, num_targets=3)
  per_target = MultiTargeted("linf", eps, num_steps=10, num_restarts=2, num_targets=3,
                             restarts_per_target=True)
  assert (total.num_runs(4), per_target.num_runs(4)) == (2, 6)
  assert per_target.num_runs(3) == 4      # k = min(num_targets, classes - 1)
  assert (model_fn(total(model_fn, x, labels, seed)).numpy().argmax(1) == 0).all()
  x_adv = per_target(model_fn, x, labels, seed).numpy()
  assert np.abs(x_adv - x).max() <= eps + 1e-6
  assert (model_fn(x_adv).numpy().argmax(1) == 3).all()


def test_mt_vs_apgdt_tool_counts_points_pointwise():
  """tools/mt_vs_apgdt.py on the decoy model: both targeted attacks reach class 2 with the same
  budget, so each breaks every point and neither breaks a point the other misses."""
  import sys, os  # pylint: disable=import-outside-toplevel,multiple-imports
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
  import mt_vs_apgdt  # pylint: disable=import-outside-toplevel
  model, _ = _decoy_model()
  rng = np.random.RandomState(1)
  x = (0.5 + rng.uniform(-0.01, 0.01, (6,) + SHAPE)).astype(np.float32)
  r = mt_vs_apgdt.compare(model, x, np.zeros(6, np.int64), "linf", EPS["linf"], steps=10,
                          targets=2)
  assert r["clean"].all() and not r["mt_robust"].any() and not r["apgd-t_robust"].any()
  assert (r["mt_only"], r["apgdt_only"]) == (0, 0)
