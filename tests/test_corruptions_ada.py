"""AdA parts: grouped conv, SSIM and its guard, projection radii, AdA vs a random perturbation."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.corruptions import ada, networks, ssim


def _images(n=8, seed=0, size=16):
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 1, (n, 1, 1, 3))
  ramp = np.linspace(0, 1, size)[None, :, None, None] * rng.uniform(0, 1, (n, 1, 1, 3))
  return np.clip(0.5 * base + 0.5 * ramp + 0.05 * rng.standard_normal((n, size, size, 3)),
                 0, 1).astype(np.float32)


@pytest.mark.parametrize("stride", [1, 2])
def test_grouped_conv_equals_per_group_conv(stride):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((6, 8, 8, 2)).astype(np.float32)
  k = rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32)
  b = rng.standard_normal((3, 4)).astype(np.float32)
  out = networks.conv2d(tf.constant(x), tf.constant(k), tf.constant(b), stride).numpy()
  for g in range(3):
    ref = tf.nn.conv2d(x[2 * g:2 * g + 2], k[g], stride, "SAME").numpy() + b[g]
    np.testing.assert_allclose(out[2 * g:2 * g + 2], ref, atol=1e-5)
  one = networks.conv2d(tf.constant(x), tf.constant(k[:1]), tf.constant(b[:1]), stride).numpy()
  np.testing.assert_allclose(one, tf.nn.conv2d(x, k[0], stride, "SAME").numpy() + b[0],
                             atol=1e-5)


def test_ssim_matches_tf_image_ssim():
  x = _images(4, 0, 32)
  y = np.clip(x + 0.1 * np.random.default_rng(1).standard_normal(x.shape), 0, 1).astype(
      np.float32)
  y[0] = x[0]
  ours = ssim.ssim(x, y).numpy()
  ref = tf.image.ssim(tf.constant(x), tf.constant(y), max_val=1.0).numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  assert abs(ours[0] - 1.0) < 1e-6


def test_guard_line_searches_a_destroying_corruption_and_keeps_mild_ones():
  x = _images(4, 0, 32)
  rng = np.random.default_rng(2)
  destroyed = rng.uniform(0, 1, x.shape).astype(np.float32)  # SSIM about 0
  mild = np.clip(x + 0.01 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  x_hat = np.concatenate([destroyed[:2], mild[2:]])
  before = ssim.ssim(x, x_hat).numpy()
  assert (before[:2] < 0.1).all() and (before[2:] > 0.9).all()
  guarded = ssim.ssim_guard(tf.constant(x), tf.constant(x_hat)).numpy()
  after = ssim.ssim(x, guarded).numpy()
  np.testing.assert_array_equal(guarded[2:], x_hat[2:])  # above the threshold: untouched
  # Moved back towards the threshold along the ray (approximately: App. G's quadratic fit
  # underfits; here it lands at SSIM ~0.24 from ~0.01).
  np.testing.assert_allclose(after[:2], ssim.SSIM_THRESHOLD, atol=0.08)
  gamma = ssim.guard_gamma(tf.constant(x), tf.constant(x_hat)).numpy()
  # gamma* is the root in [0, 1] closest to 1 of the least-squares quadratic through the 9
  # points (gamma, SSIM(x, x_gamma) - t): recomputed here with numpy.
  grid = np.linspace(0, 1, 9)
  for i in range(2):
    vals = [ssim.ssim(x[i:i + 1], ((1 - g) * x[i:i + 1] + g * x_hat[i:i + 1]).astype(
        np.float32)).numpy()[0] - ssim.SSIM_THRESHOLD for g in grid]
    roots = np.roots(np.polyfit(grid, vals, 2))
    roots = roots[np.isreal(roots)].real
    assert gamma[i] == pytest.approx(roots[(roots >= 0) & (roots <= 1)].max(), abs=1e-4)
  assert (0 < gamma[:2]).all() and (gamma[:2] < 1).all() and (gamma[2:] == 1).all()
  np.testing.assert_allclose(guarded[0], (1 - gamma[0]) * x[0] + gamma[0] * x_hat[0], atol=1e-6)


def _tiny_setup():
  net = networks.EDSRCifar(num_blocks=1, features=4)
  params = net.init(0)
  rng = np.random.default_rng(3)
  params = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
            for k, v in params.items()}  # non-zero biases, so every block has a radius
  classifier = tf.keras.Sequential([tf.keras.Input((16, 16, 3)),
                                    tf.keras.layers.Conv2D(4, 3, activation="relu"),
                                    tf.keras.layers.GlobalAveragePooling2D(),
                                    tf.keras.layers.Dense(3)])
  tf.keras.utils.set_random_seed(0)
  for w in classifier.weights:
    w.assign(tf.random.stateless_normal(w.shape, [0, 1]) * 0.5)
  return net, params, classifier


def test_perturbation_never_leaves_its_per_layer_radius():
  net, params, classifier = _tiny_setup()
  attack = ada.AdA(net, params, nu=0.015, steps=3)
  x = tf.constant(_images(4))
  radii = ada.block_radii(params)
  for k, v in params.items():
    assert radii[k] == pytest.approx(0.015 * np.linalg.norm(v))
  start = ada.random_start(attack.params, radii, 4, [1, 2])
  beta = attack.perturbation(lambda z: classifier(z), x, tf.constant([0, 1, 2, 0]), [1, 2])
  for b in (start, beta):
    for k, v in b.items():
      assert v.shape == (4,) + params[k].shape
      norms = np.linalg.norm(v.numpy().reshape(4, -1), axis=1)
      assert (norms <= radii[k] * (1 + 1e-5)).all(), k
  # Sign steps of 1/4 the median radius overshoot the ball: AdA ends on its boundary.
  norms = np.linalg.norm(beta["head/kernel"].numpy().reshape(4, -1), axis=1)
  np.testing.assert_allclose(norms, radii["head/kernel"], rtol=1e-4)


def test_ada_raises_the_loss_more_than_a_random_perturbation_of_the_same_radius():
  net, params, classifier = _tiny_setup()
  x = tf.constant(_images(8))
  y = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
  fn = lambda z: classifier(z)
  attack = ada.AdA(net, params, nu=0.05, steps=5, ssim_threshold=None)
  ce = lambda imgs: tf.keras.losses.sparse_categorical_crossentropy(y, fn(imgs),
                                                                    from_logits=True).numpy()
  clean_out = attack.corrupt({k: tf.zeros((8,) + v.shape) for k, v in params.items()}, x)
  random_beta = ada.random_start(attack.params, attack.radii, 8, [5, 6])
  random_ce = ce(attack.corrupt(random_beta, x))
  ada_ce = ce(attack(fn, x, y, [5, 6]))
  assert ada_ce.mean() > random_ce.mean() + 1e-3
  assert ada_ce.mean() > ce(clean_out).mean()
  # One perturbation per group of 4 examples: still a valid (weaker or equal) attack.
  grouped = ada.AdA(net, params, nu=0.05, steps=5, ssim_threshold=None, num_groups=2)
  beta = grouped.perturbation(fn, x, y, [5, 6])
  assert beta["head/kernel"].shape[0] == 2
  out = attack(fn, x, y, [5, 6]).numpy()
  assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("net", [networks.EDSRBaselineX4(num_blocks=1, features=4),
                                 networks.DeepAugmentCAE(widths=(4, 6, 3, 4, 3, 5, 2))],
                         ids=["edsr_baseline_x4", "deepaugment_cae"])
def test_ada_runs_the_published_networks_replayably(net):
  x = _images(4, 0, 16)
  params = {k: v + 0.02 for k, v in net.init(0).items()}
  w = tf.constant(np.random.default_rng(0).standard_normal((16 * 16 * 3, 10)), tf.float32)
  classifier = lambda im: tf.reshape(im, [tf.shape(im)[0], -1]) @ w
  attack = ada.AdA(net, params, steps=2, ssim_threshold=None)
  labels = tf.constant([0, 1, 2, 3])
  out = attack(classifier, x, labels, tf.constant([1, 2])).numpy()
  assert out.shape == x.shape and np.isfinite(out).all()
  np.testing.assert_array_equal(attack(classifier, x, labels, tf.constant([1, 2])).numpy(), out)
  assert not np.array_equal(attack(classifier, x, labels, tf.constant([5, 6])).numpy(), out)
