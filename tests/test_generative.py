"""EDM parts: preconditioning (Table 1), Heun sampler on a closed-form Gaussian denoiser, U-Net
training and sampling, FID closed forms."""
import math

import numpy as np
import pytest
import tensorflow as tf

from rgd.edm import denoiser, sampler, unet
from rgd.datagen import fid


@pytest.mark.parametrize("sigma", [0.002, 0.5, 1.0, 80.0])
def test_preconditioning_matches_table1(sigma):
  sd = 0.5
  c_skip, c_out, c_in, c_noise = [float(v) for v in denoiser.preconditioning(sigma)]
  assert c_skip == pytest.approx(sd ** 2 / (sigma ** 2 + sd ** 2), rel=1e-6)
  assert c_out == pytest.approx(sigma * sd / math.sqrt(sigma ** 2 + sd ** 2), rel=1e-6)
  assert c_in == pytest.approx(1 / math.sqrt(sigma ** 2 + sd ** 2), rel=1e-6)
  assert c_noise == pytest.approx(math.log(sigma) / 4, rel=1e-6, abs=1e-7)
  assert float(denoiser.loss_weight(sigma)) == pytest.approx(1 / c_out ** 2, rel=1e-5)


def test_time_steps_edm_eq5():
  t = sampler.time_steps()
  assert len(t) == 19 and t[-1] == 0
  assert t[0] == pytest.approx(80.0) and t[17] == pytest.approx(0.002)
  i = 5   # hand formula, EDM Eq. 5
  assert t[i] == pytest.approx((80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)


def _gaussian_denoiser(mu, cov):
  """Exact D(x; s) = E[y | y + s n = x] for y ~ N(mu, cov): mu + cov (cov + s^2 I)^-1 (x - mu)."""
  d = mu.shape[0]
  def denoise(x, s, labels):
    del labels
    flat = tf.reshape(x, [-1, d])
    gain = tf.constant(cov, tf.float32) @ tf.linalg.inv(
        tf.constant(cov, tf.float32) + tf.cast(s, tf.float32) ** 2 * tf.eye(d))
    out = mu[None] + (flat - mu[None]) @ tf.transpose(gain)
    return tf.reshape(out, tf.shape(x))
  return denoise


def test_heun_sampler_reproduces_gaussian_at_18_steps():
  # 4-dim correlated Gaussian (images of shape [2, 2, 1]); 4000 samples. Stated tolerance: means
  # within 0.06 absolute, covariance entries within 0.03 + 10% (Monte-Carlo sd of a variance
  # entry of ~1.3 is sqrt(2/4000) * 1.3 = 0.03, so this is ~3 sd).
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4, 4)) * 0.4
  cov = (a @ a.T + 0.05 * np.eye(4)).astype(np.float32)
  mu = np.array([0.3, -0.2, 0.1, 0.0], np.float32)
  seeds = sampler.image_seeds(7, tf.range(4000))
  run = tf.function(lambda s: sampler.heun_sample(_gaussian_denoiser(mu, cov), s, None, (2, 2, 1)))
  x = run(seeds).numpy()
  flat = x.reshape(-1, 4)
  np.testing.assert_allclose(flat.mean(0), mu, atol=0.06)
  np.testing.assert_allclose(np.cov(flat, rowvar=False), cov, rtol=0.1, atol=0.03)
  assert np.abs(flat.mean(0) - mu).max() > 0   # real samples, not the mean


def _tiny_net(label_dropout=0.0):
  tf.keras.utils.set_random_seed(0)
  return unet.edm_unet(image_shape=(8, 8, 3), num_classes=3, model_channels=8,
                       channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0,
                       label_dropout=label_dropout)


@pytest.mark.slow   # builds and traces a U-Net train step: ~20 s idle, 87 s on the loaded box
def test_tiny_unet_training_lowers_edm_loss():
  net = _tiny_net()
  denoise = denoiser.make_denoiser(net)
  rng = np.random.default_rng(0)
  # Data: three flat colours (one per class) plus small noise, in [-1, 1].
  labels = np.arange(32) % 3
  colours = np.array([[0.8, -0.5, 0.1], [-0.6, 0.7, -0.2], [0.0, 0.0, 0.9]], np.float32)
  images = (colours[labels][:, None, None, :] +
            0.05 * rng.normal(size=(32, 8, 8, 3))).astype(np.float32)
  onehot = tf.one_hot(labels, 3)
  opt = tf.keras.optimizers.Adam(2e-2)
  eval_seed = tf.constant([123, 0], tf.int64)

  def loss_at(seed):
    return float(tf.reduce_mean(denoiser.edm_loss(denoise, images, onehot, seed, training=False)))

  @tf.function
  def step(seed):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(denoiser.edm_loss(denoise, images, onehot, seed))
    grads = tape.gradient(loss, net.trainable_variables)
    opt.apply(grads, net.trainable_variables)
    return loss

  before = loss_at(eval_seed)
  for i in range(15):
    step(tf.constant([i, 1], tf.int64))
  after = loss_at(eval_seed)
  assert after < 0.85 * before, (before, after)


@pytest.mark.slow   # three eager 4-step samplings of a tiny U-Net
def test_sampling_deterministic_and_class_conditioned():
  net = _tiny_net()
  # EDM initialises every block's conv1 and the output conv at ~1e-5 (F ~ 0); give them
  # weights so that F and the labels matter.
  for layer in net.layers:
    if layer.name.endswith(("_conv1", "_aux_conv")):
      for v in layer.weights:
        v.assign(tf.random.stateless_normal(v.shape, [1, 2]) * 0.1)
  denoise = denoiser.make_denoiser(net)
  seeds = sampler.image_seeds(3, tf.range(4))
  labels = tf.one_hot([0, 1, 2, 0], 3)
  a = sampler.heun_sample(denoise, seeds, labels, (8, 8, 3), num_steps=4).numpy()
  b = sampler.heun_sample(denoise, seeds, labels, (8, 8, 3), num_steps=4).numpy()
  np.testing.assert_array_equal(a, b)
  c = sampler.heun_sample(denoise, seeds, tf.one_hot([1, 2, 0, 1], 3), (8, 8, 3),
                          num_steps=4).numpy()
  assert np.abs(a - c).max() > 1e-3
  # An image depends only on its own seed: the first two of a batch of 4 equal a batch of 2.
  d = sampler.heun_sample(denoise, seeds[:2], labels[:2], (8, 8, 3), num_steps=4).numpy()
  np.testing.assert_allclose(a[:2], d, atol=1e-4)  # batched-matmul rounding


def test_fid_identical_is_zero_and_gaussians_closed_form():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(500, 3))
  assert fid.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
  # Closed form for diagonal Gaussians: |mu1-mu2|^2 + sum (s1 - s2)^2 (stds s).
  mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
  s1, s2 = np.array([1.0, 2.0]), np.array([3.0, 0.5])
  got = fid.frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2))
  assert got == pytest.approx(5.0 + 4.0 + 2.25)
  # Non-diagonal: rotating both covariances by the same rotation leaves the distance unchanged.
  r = np.array([[0.6, -0.8], [0.8, 0.6]])
  got_rot = fid.frechet_distance(r @ mu1, r @ np.diag(s1 ** 2) @ r.T, r @ mu2,
                                 r @ np.diag(s2 ** 2) @ r.T)
  assert got_rot == pytest.approx(got)


def test_fid_of_images_mean_colour_shift_closed_form():
  # Extractor: mean colour of an image in [0, 1] (the penultimate layer of a GAP + Dense
  # classifier, as tools/fid.py --extractor=labeler takes it). Shifting every pixel by +c/255
  # (no clipping) moves the mean by c/255 per channel and leaves the covariance unchanged, so
  # FID = 3 (c/255)^2 exactly; a set against itself gives 0.
  import keras
  from rgd.datagen import complementarity
  inputs = keras.Input((4, 4, 3))
  model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
  extractor = complementarity.penultimate_extractor(model)
  rng = np.random.default_rng(0)
  real = rng.integers(40, 200, size=(64, 4, 4, 3)).astype(np.uint8)
  value, sizes = fid.fid_of_images(extractor, real, real + 10, batch_size=16)
  assert sizes == {"num_real": 64, "num_generated": 64, "feature_dim": 3}
  assert value == pytest.approx(3 * (10 / 255) ** 2, rel=1e-3)
  assert fid.fid_of_images(extractor, real, real)[0] == pytest.approx(0.0, abs=1e-9)


def test_churn_is_seeded_per_image_and_changes_the_path():
  # S_churn > 0 adds fresh noise at every step with gamma > 0 (Algorithm 2): the samples differ
  # from the deterministic ones, yet are a function of the image seeds alone.
  mu, cov = np.zeros(4, np.float32), np.eye(4, dtype=np.float32) * 0.3
  denoise = _gaussian_denoiser(mu, cov)
  seeds = sampler.image_seeds(1, tf.range(6))
  run = lambda s, churn: sampler.heun_sample(denoise, s, None, (2, 2, 1), num_steps=6,
                                             s_churn=churn).numpy()
  plain, churned = run(seeds, 0.0), run(seeds, 20.0)
  assert np.abs(plain - churned).min() > 0
  np.testing.assert_allclose(run(seeds[3:], 20.0), churned[3:], atol=1e-5)


def test_fid_reads_pseudo_labelled_records_uniformly(tmp_path):
  # tools/fid.py samples generated records uniformly: a pseudo-labelled set with an empty class
  # (which the class-balanced read of complementarity refuses) gives its first n records.
  from rgd.data import tfrecord
  from rgd.datagen import complementarity
  images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  labels = [0, 0, 2, 0, 2, 0, 0, 2, 0, 0]   # class 1 empty
  tfrecord.write_shard(str(tmp_path / "generated-00000-of-00001.tfrecord"),
                       (tfrecord.serialize(im, y) for im, y in zip(images, labels)))
  pattern = str(tmp_path / "generated-*.tfrecord")
  got, got_labels = complementarity.read_generated(pattern, 7, 3, 0, balanced=False)
  np.testing.assert_array_equal(got, images[:7])
  assert got_labels.tolist() == labels[:7]
  with pytest.raises(ValueError, match="too few records per class"):
    complementarity.read_generated(pattern, 6, 3, 0)
  with pytest.raises(ValueError, match="10 records, 11 needed"):
    complementarity.read_generated(pattern, 11, 3, 0, balanced=False)


def test_forward_flops_count_self_attention_by_hand():
  # The U-Net's attention blocks (rgd.bench.flops, used by `benchmark.py sample` for MFU):
  # S = 16 positions of C = 8 channels, 2 heads of size 4: q, k, v, output projections
  # 4 x 2 S C (h d) plus QK^T and AV 2 x 2 S^2 (h d).
  import keras
  from rgd.bench import flops
  seq = keras.Input((16, 8))
  model = keras.Model(seq, keras.layers.MultiHeadAttention(2, 4)(seq, seq))
  assert flops.forward_flops(model, (16, 8)) == 4 * 2 * 16 * 8 * 8 + 2 * 2 * 16 * 16 * 8
