"""Lipschitz constants of rgd.certified: power iteration against SVD of the explicit operator,
and the certified (SVD/FFT) bounds are upper bounds."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.certified import layers, lipschitz

# Power iteration converges geometrically in (sigma_2 / sigma_1)^2; 300 iterations (2000 for the
# convs, whose top singular values are close) leave a relative error below 1e-4 here.
POWER_RTOL = 1e-4


def test_dense_power_iteration_equals_largest_singular_value():
  rng = np.random.RandomState(0)
  w = rng.normal(size=(20, 30)).astype(np.float32)
  exact = np.linalg.svd(w.astype(np.float64), compute_uv=False)[0]
  sigma, u = lipschitz.dense_power_iteration(w, rng.normal(size=20), 300)
  assert float(sigma) == pytest.approx(exact, rel=POWER_RTOL)
  assert float(sigma) <= exact * (1 + 1e-6)          # an estimate from below
  bound = lipschitz.dense_spectral_bound(w)
  assert exact <= bound <= exact * (1 + 2 * lipschitz.BOUND_SAFETY)
  # The layer keeps its iterate between calls (persistent, non-trainable).
  layer = layers.LipDense(30)
  layer.build((None, 20))
  layer.kernel.assign(w)
  first = float(layer.power_lipschitz(1))
  for _ in range(60):
    last = float(layer.power_lipschitz(5))
  assert not layer.iterate.trainable
  assert first < last == pytest.approx(exact, rel=POWER_RTOL)


@pytest.mark.parametrize("kernel_size,stride,padding", [(3, 1, "SAME"), (5, 2, "SAME"),
                                                        (2, 2, "VALID"), (3, 2, "VALID")])
def test_conv_power_iteration_matches_explicit_matrix(kernel_size, stride, padding):
  rng = np.random.RandomState(kernel_size + stride)
  shape = (6, 6, 2)
  kernel = rng.normal(size=(kernel_size, kernel_size, 2, 3)).astype(np.float32)
  matrix = lipschitz.explicit_conv_matrix(kernel, shape, stride, padding)
  exact = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)[0]
  step = tf.function(lambda x: lipschitz.conv_power_iteration(kernel, x, 50, stride, padding))
  x = tf.constant(rng.normal(size=(1,) + shape), tf.float32)
  for _ in range(40):                                  # 2000 iterations, persistent iterate
    sigma, x = step(x)
  assert float(sigma) == pytest.approx(exact, rel=POWER_RTOL)
  # The FFT (circular, polyphase) bound is an upper bound, and not a wild one.
  bound = lipschitz.conv_spectral_bound(kernel, shape[:2], stride, padding)
  assert exact <= bound <= 2.0 * exact


def test_explicit_matrix_is_the_conv():
  rng = np.random.RandomState(1)
  kernel = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
  x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
  m = lipschitz.explicit_conv_matrix(kernel, (5, 5, 2), 2, "SAME")
  y = tf.nn.conv2d(x, kernel, 2, "SAME").numpy().reshape(-1)
  np.testing.assert_allclose(x.reshape(-1) @ m, y, rtol=1e-5, atol=1e-5)


def test_liresnet_block_is_x_plus_scaled_conv():
  """The block is one conv with kernel I + s * affine * W, i.e. x + s * conv_{affine W}(x), so
  its Lipschitz constant is that single conv's norm (not 1 + s ||W||)."""
  rng = np.random.RandomState(2)
  block = layers.LiResNetBlock(3, residual_scale=0.5)
  x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
  block(x)
  w = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
  a = rng.uniform(0.5, 2, size=4).astype(np.float32)
  block.kernel.assign(w)
  block.affine.assign(a)
  expected = x + 0.5 * tf.nn.conv2d(x, w * a, 1, "SAME").numpy()
  np.testing.assert_allclose(block(x).numpy(), expected, rtol=1e-5, atol=1e-5)
  matrix = lipschitz.explicit_conv_matrix(block.effective_kernel().numpy(), (6, 6, 4))
  exact = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)[0]
  for _ in range(20):
    est = float(block.power_lipschitz(20))
  assert est == pytest.approx(exact, rel=POWER_RTOL)
  assert block.certified_lipschitz() >= exact


def test_minmax_is_one_lipschitz_and_a_permutation():
  rng = np.random.RandomState(3)
  x, y = rng.normal(size=(2, 100, 8)).astype(np.float32)
  f = layers.MinMax()
  fx, fy = f(x).numpy(), f(y).numpy()
  assert np.all(np.linalg.norm(fx - fy, axis=1) <= np.linalg.norm(x - y, axis=1) + 1e-5)
  np.testing.assert_allclose(np.sort(fx, axis=1), np.sort(x, axis=1))


def test_split_refuses_a_layer_without_a_bound_and_a_model_not_ending_in_its_head():
  """GloRo and LOT share rgd.certified.lipschitz.split_body_and_head: a plain Dense in the body
  (no certified constant) or a head that is not the last layer is a ConfigError naming it."""
  import keras  # pylint: disable=g-import-not-at-top
  from rgd.certified import gloro  # pylint: disable=g-import-not-at-top
  from rgd.errors import ConfigError  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((4,))
  dense = layers.LipDense(4, name="ok")(inputs)
  good = keras.Model(inputs, layers.GloroHead(3, name="head")(dense))
  body, head = gloro.split_gloro_model(good)
  assert [l.name for l in body] == ["ok"] and head.name == "head"
  plain = keras.Model(inputs, layers.GloroHead(3)(keras.layers.Dense(4, name="plain")(dense)))
  with pytest.raises(ConfigError, match=r"layer plain \(Dense\) has no known Lipschitz"):
    gloro.split_gloro_model(plain)
  headless = keras.Model(inputs, layers.MinMax()(layers.GloroHead(4)(dense)))
  with pytest.raises(ConfigError, match="must end in a GloroHead layer"):
    gloro.split_gloro_model(headless)
