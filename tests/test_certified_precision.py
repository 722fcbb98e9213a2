"""Certificates run in float32 as written (TF32 and XLA auto-clustering off) and the l_inf
interval certificate of the references (rgd.certified.precision, rgd.certified.interval)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import errors
from rgd.certified import certificate, interval, layers, models, precision


@pytest.fixture
def tf32_on():
  before = tf.config.experimental.tensor_float_32_execution_enabled()
  tf.config.experimental.enable_tensor_float_32_execution(True)
  tf.config.optimizer.set_jit("autoclustering")
  yield
  tf.config.experimental.enable_tensor_float_32_execution(before)
  tf.config.optimizer.set_jit(False)


@pytest.mark.parametrize("tf32", [True, False])
def test_exact_float32_turns_tf32_and_jit_off_and_restores(tf32):
  tf.config.experimental.enable_tensor_float_32_execution(tf32)
  tf.config.optimizer.set_jit("autoclustering")
  try:
    with precision.exact_float32() as inside:
      assert not tf.config.experimental.tensor_float_32_execution_enabled()
      assert not tf.config.optimizer.get_jit()
      assert inside["tensor_float_32_execution"] is False and inside["xla_jit"] == "off"
    assert tf.config.experimental.tensor_float_32_execution_enabled() == tf32
    assert tf.config.optimizer.get_jit() == "autoclustering"
    with pytest.raises(KeyError):       # restored also when the certificate raises
      with precision.exact_float32():
        raise KeyError("x")
    assert tf.config.experimental.tensor_float_32_execution_enabled() == tf32
  finally:
    tf.config.experimental.enable_tensor_float_32_execution(True)
    tf.config.optimizer.set_jit(False)


def test_auto_jit_from_the_environment_is_refused(monkeypatch):
  monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=2")
  with pytest.raises(errors.ConfigError, match="TF_XLA_FLAGS"):
    with precision.exact_float32():
      pass


@pytest.fixture(scope="module")
def sortnet():
  keras.utils.set_random_seed(3)
  net = models.sortnet(3, 16, num_classes=4, input_shape=(4, 4, 1), q=0.6)
  rng = np.random.RandomState(0)
  net(rng.uniform(size=(64, 4, 4, 1)).astype(np.float32), training=True)  # running means
  return net


def _images(n=48, seed=1):
  rng = np.random.RandomState(seed)
  # Half the pixels at the ends of [0, 1], where the clip of the interval bound matters.
  x = rng.uniform(size=(n, 4, 4, 1))
  return np.where(rng.uniform(size=x.shape) < 0.5, np.round(x), x).astype(np.float32)


def test_certify_runs_without_tf32_restores_it_and_reports_it(sortnet, tf32_on, monkeypatch):
  seen = []
  logits_fn = certificate._logits

  def spy(*args):
    seen.append((tf.config.experimental.tensor_float_32_execution_enabled(),
                 tf.config.optimizer.get_jit()))
    return logits_fn(*args)
  monkeypatch.setattr(certificate, "_logits", spy)
  result = certificate.certify(sortnet, _images(8), np.zeros(8), bisection_steps=2)
  assert seen == [(False, "")]
  assert result["precision"]["tensor_float_32_execution"] is False
  assert tf.config.experimental.tensor_float_32_execution_enabled()
  assert tf.config.optimizer.get_jit() == "autoclustering"


def test_interval_bounds_of_one_unit_by_hand():
  layer = layers.LinfDist(1, mean_shift=False)
  layer.build((None, 2))
  layer.weight.assign([[0.5], [2.0]])
  model = keras.Sequential([keras.Input((2,)), layer, layers.LogitScale()])
  # x in [0, 1] x [0.2, 0.4]: |x1 - 0.5| in [0, 0.5], |x2 - 2| in [1.6, 1.8]; max: [1.6, 1.8].
  lo, hi = interval.distance_bounds(model, np.array([[0.0, 0.2]]), np.array([[1.0, 0.4]]))
  np.testing.assert_allclose([lo[0, 0], hi[0, 0]], [1.6, 1.8], rtol=1e-5)
  assert lo[0, 0] <= 1.6 and hi[0, 0] >= 1.8                     # widened outwards
  # Sort neuron q = 0.5, T = 2: (2/3, 1/3) on the sorted ends: lower (1.6, 0), upper (1.8, .5).
  sort = layers.LinfDist(1, mean_shift=False, sort_q=0.5, sort_truncate=2)
  sort.build((None, 2))
  sort.weight.assign([[0.5], [2.0]])
  model = keras.Sequential([keras.Input((2,)), sort, layers.LogitScale()])
  lo, hi = interval.distance_bounds(model, np.array([[0.0, 0.2]]), np.array([[1.0, 0.4]]))
  np.testing.assert_allclose([lo[0, 0], hi[0, 0]], [1.6 * 2 / 3, 1.8 * 2 / 3 + 0.5 / 3],
                             rtol=1e-5)


def test_interval_never_certifies_less_than_margin_and_more_near_the_clip(sortnet):
  x = _images()
  y = np.argmax(sortnet(x).numpy(), axis=1)
  radii = [0.01, 0.03, 0.1]
  margin = certificate.certify(sortnet, x, y, radii=radii, linf_bound="margin")
  box = certificate.certify(sortnet, x, y, radii=radii, linf_bound="interval")
  assert np.all(box["radius"] >= margin["radius"])
  for r in radii:
    assert np.all(box["certified_at"][r] >= margin["certified_at"][r])
  assert np.sum(box["radius"] > margin["radius"] + 1e-3) > 0


def test_interval_certificate_is_sound_under_sampling(sortnet):
  x = _images(16)
  y = np.argmax(sortnet(x).numpy(), axis=1)
  result = certificate.certify(sortnet, x, y)
  rng = np.random.RandomState(0)
  for i in np.flatnonzero(np.isfinite(result["radius"]) & (result["radius"] > 0)):
    r = result["radius"][i]
    # Corners of the clipped box: the extreme points of a max of |x - w| terms.
    corners = np.clip(x[i] + r * rng.choice([-1.0, 1.0], size=(256,) + x.shape[1:]), 0, 1)
    assert np.all(np.argmax(sortnet(corners.astype(np.float32)).numpy(), axis=1) == y[i])


def test_input_normalize_scales_the_margin_radius():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((2, 2, 1))
  h = layers.InputNormalize((0.5,), 0.25)(inputs)
  h = keras.layers.Flatten()(h)
  h = layers.LinfDist(3, mean_shift=False, use_bias=True)(h)
  model = keras.Model(inputs, layers.LogitScale()(h))
  x = np.random.RandomState(0).uniform(size=(8, 2, 2, 1)).astype(np.float32)
  res = certificate.certify(model, x, np.zeros(8), linf_bound="margin")
  logits = np.sort(res["logits"], axis=1)
  tol = certificate.rounding_tolerance(res["logits"])
  np.testing.assert_allclose(res["radius"], (logits[:, -1] - logits[:, -2] - tol) * 0.25 / 2)


def test_interval_helper_alone_also_runs_without_tf32(sortnet, tf32_on, monkeypatch):
  seen = []
  bounds = interval.distance_bounds

  def spy(*args):
    seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
    return bounds(*args)
  monkeypatch.setattr(interval, "distance_bounds", spy)
  x = _images(4)
  interval.certified_at(sortnet, x, np.zeros(4, int), 0.01, 1.0, np.zeros(4))
  assert seen and not any(seen)
  assert tf.config.experimental.tensor_float_32_execution_enabled()
