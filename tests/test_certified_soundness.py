"""Soundness of rgd.certified's certificates: certified points survive rgd's strongest attacks at
the certified radius, ties never certify, bf16 does not loosen the certificate, and the
l_inf-dist / SortNet layers are 1-Lipschitz in Linf."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd import attacks
from rgd.evaluation import cascade
from rgd.certified import certificate, gloro, layers, models
from rgd.training.objectives import base as objective_base
from rgd.training.objectives import certified as objective

SIZE = 16     # 16x16 images: LiResNet's stride-2 stem and 4x4/4 neck still apply


def _train(net, kind, eps, steps, lr, **kw):
  """A few steps of the certified objective (the same code path as rgd.training.trainer)."""
  x, y = make_images(64, size=SIZE, seed=1)
  x = tf.constant(x.astype(np.float32) / 255)
  y1h = tf.one_hot(y, 10)
  step = tf.Variable(0, dtype=tf.int64)
  obj = objective.CertifiedObjective(kind, eps, **kw)
  obj.bind(net, step, steps)
  opt = keras.optimizers.Adam(lr)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      fn = lambda z: net(z, training=True)
      parts, _, _ = obj.losses(objective_base.Passes(fn, fn, fn),
                               objective_base.StepBatch(x, y1h, tf.constant([0, 0])))
      loss = tf.reduce_mean(parts["total"])
    opt.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
    step.assign_add(1)
    return loss
  losses = [float(train_step()) for _ in range(steps)]
  assert losses[-1] < losses[0]
  return net


@pytest.fixture(scope="module")
def gloro_net():
  keras.utils.set_random_seed(0)
  net = models.liresnet(1, 8, input_shape=(SIZE, SIZE, 3))
  return _train(net, "gloro", 0.5, 60, 0.01)


@pytest.fixture(scope="module")
def test_data():
  x, y = make_images(64, size=SIZE, seed=2)
  return x.astype(np.float32) / 255, y


def _attack_all(norm, eps, model, x, y, strongest=True, steps=20):
  """Pointwise worst case of APGD-CE, APGD-T and MultiTargeted at radius eps (APGD-CE only
  with strongest=False)."""
  model_fn = lambda z: model(z, training=False)
  robust = np.ones(len(y), bool)
  suite = [attacks.APGD(norm, eps, "ce", steps, 1)]
  if strongest:
    suite += [attacks.APGDTargeted(norm, eps, steps, 1, 3),
              attacks.MultiTargeted(norm, eps, steps, 1, 3)]
  for attack in suite:
    fn = cascade.compile_attack(attack, model_fn)
    x_adv = fn(tf.constant(x), tf.constant(y, tf.int32), tf.constant([0, 1], tf.int32))
    diff = (x_adv.numpy() - x).reshape(len(x), -1)
    size = np.linalg.norm(diff, axis=1) if norm == "l2" else np.abs(diff).max(axis=1)
    assert np.all(size <= eps * (1 + 1e-5))
    robust &= np.argmax(model(x_adv).numpy(), axis=1) == y
  return robust


def _check_sound(model, x, y):
  result = certificate.certify(model, x, y)
  norm = result["info"]["norm"]
  radius = result["radius"][result["correct"]]
  assert (radius > 0).sum() >= 5, "too few certified points for a meaningful test"
  eps = float(np.median(radius[radius > 0]))           # half the certifiable points
  certified = result["correct"] & (result["radius"] > eps)
  robust = _attack_all(norm, eps, model, x, y)
  assert np.all(robust[certified]), "an attack broke a certified point"
  # Not vacuous: at 5x the largest certified radius the same attacks break points.
  big = 5 * float(result["radius"][np.isfinite(result["radius"])].max())
  assert not _attack_all(norm, min(big, 1.0), model, x, y, False, 10)[result["correct"]].all()
  return certified.sum()


@pytest.mark.slow
def test_gloro_certificate_survives_attacks(gloro_net, test_data):
  _check_sound(gloro_net, *test_data)


def test_certified_bound_is_above_converged_power_iteration(gloro_net):
  info = certificate.lipschitz_info(gloro_net, refresh=True)
  assert info["power_iteration_estimate"] <= info["body_lipschitz"]
  assert info["body_lipschitz"] <= 1.5 * info["power_iteration_estimate"]


def test_exact_tie_is_not_certified():
  head = np.eye(3, dtype=np.float32)
  logits = np.array([[2.0, 2.0, 0.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.0]], np.float32)
  r, _ = certificate.gloro_radius(logits, head, 1.0)
  assert r[0] < 0 and r[1] < 0 and r[2] > 0
  r, _ = certificate.linf_radius(logits, 1.0)
  assert r[0] < 0 and r[1] < 0 and r[2] > 0
  # Identical class weights (K_ij = 0) with tied logits: still not certified.
  r, _ = certificate.gloro_radius(np.array([[1.0, 1.0]]), np.ones((4, 2)), 1.0)
  assert r[0] < 0
  # A margin below the float32 rounding tolerance does not certify either.
  tiny = np.array([[1000.0, 1000.0 * (1 - 1e-6), 0.0]], np.float32)
  r, _ = certificate.gloro_radius(tiny, head, 1.0)
  assert r[0] < 0


def test_gloro_radius_matches_y_bot(gloro_net, test_data):
  """radius > eps exactly when y_j beats y_bot (with the certified constants) by the margin."""
  x, y = test_data
  result = certificate.certify(gloro_net, x, y)
  info = result["info"]
  eps = float(np.median(result["radius"][result["radius"] > 0]))
  y_bot, j = gloro.bottom_logit(result["logits"], info["head_kernel"], info["body_lipschitz"],
                                eps)
  top = result["logits"][np.arange(len(y)), j.numpy()]
  tol = certificate.rounding_tolerance(result["logits"])
  clear = np.abs(top - y_bot.numpy() - tol) > 1e-4           # away from float noise
  assert np.array_equal((result["radius"] > eps)[clear], (top - y_bot.numpy() > tol)[clear])


def test_bf16_certificate_is_float32_or_more_conservative(gloro_net, test_data):
  x, y = test_data
  f32 = certificate.certify(gloro_net, x, y, refresh=False)
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    net16 = models.liresnet(1, 8, input_shape=(SIZE, SIZE, 3))
    net16.set_weights(gloro_net.get_weights())
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert net16.layers[2].compute_dtype == "bfloat16"
  # certify() evaluates a float32 copy: the same certificate.
  c16 = certificate.certify(net16, x, y, refresh=False)
  np.testing.assert_array_equal(c16["radius"], f32["radius"])
  # Certifying from the bf16 model's own logits uses bf16's rounding margin: never looser.
  logits16 = net16(x).numpy()
  r16, _ = certificate.radii_from_logits(f32["info"], logits16, "bfloat16")
  assert np.all(r16 <= f32["radius"] + 1e-6)


@pytest.mark.parametrize("sort_q", [None, 0.85])
def test_linf_dist_layer_is_one_lipschitz(sort_q):
  rng = np.random.RandomState(0)
  layer = layers.LinfDist(16, mean_shift=True, sort_q=sort_q, sort_truncate=4)
  x = rng.uniform(size=(200, 12)).astype(np.float32)
  layer(x, training=True)                            # builds, moves the running mean
  delta = rng.uniform(-1, 1, size=x.shape).astype(np.float32) * rng.uniform(0, 0.3, (200, 1))
  fx, fy = layer(x).numpy(), layer(x + delta).numpy()
  assert np.all(np.abs(fx - fy).max(axis=1) <= np.abs(delta).max(axis=1) + 1e-5)
  assert np.abs(layer.running_mean.numpy()).sum() > 0


def test_linf_dist_p_norm_and_sort_neuron_values():
  x = np.array([[0.0, 3.0, 4.0]], np.float32)
  w = np.zeros((3, 1), np.float32)
  assert float(layers.lp_distance(x, w, tf.constant(2.0))[0, 0]) == pytest.approx(5.0)
  assert float(layers.lp_distance(x, w, tf.constant(float("inf")))[0, 0]) == 4.0
  # q (1-q)^k weights over the sorted |x - w| = (4, 3, 0), normalised: q = 0.5, T = 2.
  assert float(layers.sort_distance(x, w, 0.5, 2)[0, 0]) == pytest.approx((4 * .5 + 3 * .25) / .75)


@pytest.mark.slow
def test_linf_dist_net_certificate_survives_attacks(test_data):
  keras.utils.set_random_seed(0)
  net = models.linf_dist_net(3, 32, input_shape=(SIZE, SIZE, 3))
  net = _train(net, "linf_dist", 8 / 255, 40, 0.02, p_anneal=(0.1, 0.5))
  _check_sound(net, *test_data)
