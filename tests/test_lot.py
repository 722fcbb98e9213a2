"""rgd.certified.lot: the LOT convolution computes what lot_ortho_conv.py computes (closed forms:
identity kernel, 1x1 kernels, the unshuffle order), its certified bound holds for the realised
weights (explicit matrices, random pairs, attacks at the certified radius), the model saves and
loads, and the 'lot' objective is the reference's loss."""
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd import attacks, models
from rgd.certified import certificate, lot
from rgd.certified import models as certified_models
from rgd.evaluation import cascade
from rgd.training.objectives import base as objective_base
from rgd.training.objectives import certified as objective


def _layer(filters, kernel, strides, input_shape, kernel_value=None, residual=False):
  layer = lot.LOTConv2D(filters, kernel, strides=strides, residual=residual)
  layer.build((None, *input_shape))
  if kernel_value is not None:
    layer.kernel.assign(kernel_value)
  if layer.bias is not None:
    layer.bias.assign(np.zeros(filters, np.float32))
  return layer


def _explicit_matrix(fn, shape):
  """The linear map fn as a dense [out, in] matrix (bias-free fn)."""
  n = int(np.prod(shape))
  basis = np.eye(n, dtype=np.float32).reshape(n, *shape)
  return fn(tf.constant(basis)).numpy().reshape(n, -1).T


def test_pixel_unshuffle_is_einops_order():
  # einops "b c (w k1) (h k2) -> b (c k1 k2) w h": channel c * 4 + k1 * 2 + k2 holds pixel
  # (2 i + k1, 2 j + k2) of channel c.
  x = np.random.RandomState(0).rand(1, 4, 6, 3).astype(np.float32)
  y = lot.pixel_unshuffle(tf.constant(x), 2).numpy()
  assert y.shape == (1, 2, 3, 12)
  for c in range(3):
    for k1 in range(2):
      for k2 in range(2):
        np.testing.assert_array_equal(y[0, :, :, c * 4 + k1 * 2 + k2], x[0, k1::2, k2::2, c])


def test_identity_kernel_gives_x_over_sqrt_one_plus_ridge():
  """The reference's init for cout == cin: identity kernel. Its centred spectrum is I at every
  frequency, so S = (1 + 1e-4) I and W = I / sqrt(1 + 1e-4) (Newton converges: all eigenvalues
  of S / ||S||_F equal 1 / sqrt(c))."""
  layer = _layer(6, 3, 1, (5, 5, 6))
  x = np.random.RandomState(1).randn(2, 5, 5, 6).astype(np.float32)
  np.testing.assert_allclose(layer(x).numpy(), x / math.sqrt(1 + 1e-4), atol=2e-6)
  assert abs(layer.certified_lipschitz() - 1 / math.sqrt(1 + 1e-4)) < 1e-5


@pytest.mark.parametrize("cout,cin", [(3, 5), (5, 3)])
def test_newton_gives_v_times_inverse_square_root(cout, cin):
  """A well-conditioned 1x1 kernel V [cout, cin]: W = (V V^T + 1e-4 I)^{-1/2} V by eigh."""
  rng = np.random.RandomState(2)
  u, _, vt = np.linalg.svd(rng.randn(cout, cin))
  k = min(cout, cin)
  v = u[:, :k] @ np.diag(np.linspace(1.0, 2.0, k)) @ vt[:k]         # singular values 1..2
  s = v @ v.T + 1e-4 * np.eye(cout)
  e, q = np.linalg.eigh(s)
  want = q @ np.diag(e ** -0.5) @ q.T @ v
  got = lot.ortho_spectrum(tf.constant(v.T[None, None], tf.float32), 1).numpy()[0]
  np.testing.assert_allclose(got.real, want, atol=2e-5)
  np.testing.assert_allclose(got.imag, 0, atol=1e-7)
  sv = np.linalg.svd(want, compute_uv=False)
  # orthonormal rows (cout < cin) or sigma / sqrt(sigma^2 + 1e-4) < 1 (cout > cin)
  np.testing.assert_allclose(sv, np.linspace(2.0, 1.0, k) / np.sqrt(
      np.linspace(2.0, 1.0, k) ** 2 + 1e-4), rtol=1e-12)


@pytest.mark.parametrize("filters,strides,channels,near_orthogonal", [
    (4, 1, 4, True), (8, 2, 2, True), (6, 1, 3, False), (3, 2, 4, False)])
def test_certified_bound_covers_the_explicit_matrix(filters, strides, channels,
                                                    near_orthogonal):
  shape = (6, 6, channels)
  rng = np.random.RandomState(3)
  cin = channels * strides ** 2
  kernel = rng.normal(0, 0.3, (3, 3, cin, filters)).astype(np.float32)
  if near_orthogonal:
    kernel[1, 1] += np.eye(cin, filters, dtype=np.float32)
  layer = _layer(filters, 3, strides, shape, kernel)
  bound = layer.certified_lipschitz()
  sigma = np.linalg.svd(_explicit_matrix(layer, shape), compute_uv=False)[0]
  assert sigma <= bound
  assert bound <= 1 + 1e-4            # never much above 1, whatever the kernel
  if near_orthogonal:                 # cout <= cin: rows orthonormal at every frequency
    assert bound >= 1 - 1e-4


def test_residual_block_bound():
  shape = (4, 4, 4)
  kernel = np.random.RandomState(4).normal(0, 0.5, (3, 3, 4, 4)).astype(np.float32)
  block = _layer(4, 3, 1, shape, kernel, residual=True)
  conv = _layer(4, 3, 1, shape, kernel)
  assert abs(block.certified_lipschitz() - (0.5 + 0.5 * conv.certified_lipschitz())) < 1e-5
  x = np.random.RandomState(5).randn(3, *shape).astype(np.float32)
  a = conv(x).numpy()
  mm = np.concatenate([np.maximum(a[..., :2], a[..., 2:]), np.minimum(a[..., :2], a[..., 2:])],
                      -1)
  np.testing.assert_allclose(block(x).numpy(), 0.5 * x + 0.5 * mm, atol=1e-6)


@pytest.fixture(scope="module")
def tiny():
  keras.utils.set_random_seed(0)
  return certified_models.lipconvnet(10, 10, init_channels=4)


def test_lipconvnet_layer_list():
  """lot-S: LipConvnet-10, 2 blocks per stage, 32 -> 64 -> ... -> 1024 channels at 1 x 1;
  LipResNet mixes no block with 2 per stage, lot-L (8 per stage) six per stage."""
  net = models.get_model("lot-S", num_classes=100)
  convs = [l for l in net.layers if isinstance(l, lot.LOTConv2D)]
  assert len(convs) == 10 and not any(c.residual for c in convs)
  assert [tuple(c.kernel.shape) for c in convs[:2]] == [(3, 3, 3, 32), (3, 3, 128, 64)]
  assert tuple(convs[-1].kernel.shape) == (1, 1, 4 * 512, 1024)
  assert net.output_shape == (None, 100) and not net.get_layer("logits").lln
  # Parameters: sum over stages of (first conv, stride-2 conv) kernels and biases + head.
  want, cin = 0, 3
  for s in range(5):
    planes, k = 32 * 2 ** s, (1 if s == 4 else 3)
    want += 9 * cin * planes + planes + k * k * 4 * planes * 2 * planes + 2 * planes
    cin = 2 * planes
  assert net.count_params() == want + 1024 * 100 + 100
  deep = certified_models.lipconvnet(40, 10, init_channels=2, lln=True)
  mixed = [l for l in deep.layers if isinstance(l, lot.LOTConv2D) and l.residual]
  assert len(mixed) == 5 * 6 and deep.get_layer("logits").lln
  assert models.get_model("lot_plain-15-2").name == "lot_plain-15-2"


def test_model_bound_covers_random_pairs_and_logit_differences(tiny):
  body = keras.Model(tiny.input, tiny.get_layer("flatten").output)
  info = certificate.lipschitz_info(tiny)
  assert info["kind"] == "lot" and info["norm"] == "l2"
  bound = info["body_lipschitz"]
  assert 1 / 0.2507 * 0.99 < bound <= 1 / 0.2507 * (1 + 1e-4)
  rng = np.random.RandomState(6)
  x = rng.rand(16, 32, 32, 3).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
  dx = np.linalg.norm((x - y).reshape(16, -1), axis=1)
  ratio = np.linalg.norm((body(x) - body(y)).numpy(), axis=1) / dx
  assert np.all(ratio <= bound)
  w = info["head_kernel"].T
  fx, fy = tiny(x).numpy(), tiny(y).numpy()
  for i in range(10):
    for j in range(10):
      if i != j:
        change = np.abs((fx[:, j] - fx[:, i]) - (fy[:, j] - fy[:, i]))
        assert np.all(change <= bound * np.linalg.norm(w[j] - w[i]) * dx + 1e-5)


def test_head_rows_orthonormal_and_radius_hand_computed(tiny):
  w = certificate.lipschitz_info(tiny)["head_kernel"]          # [d, K]
  # Orthogonal up to the ridge: rows of norm^2 sigma^2 / (sigma^2 + 1e-4), sigma^2 ~ 1/3 for
  # torch's U(+-1/sqrt(d)) init of d = 128 inputs.
  np.testing.assert_allclose(w.T @ w, np.eye(10), atol=1e-3)
  x, y = make_images(8, seed=7)
  result = certificate.certify(tiny, x, y)
  logits = result["logits"].astype(np.float64)
  body = result["info"]["body_lipschitz"]
  for b in range(8):
    j = int(np.argmax(logits[b]))
    tol = 1e-5 * (1 + 2 * np.abs(logits[b]).max())
    r = min((logits[b, j] - logits[b, i] - tol) / (body * np.linalg.norm(w[:, j] - w[:, i]))
            for i in range(10) if i != j)
    assert abs(result["radius"][b] - r) <= 1e-6 * abs(r)


def test_save_load_round_trip(tiny, tmp_path):
  path = os.path.join(tmp_path, "lot.keras")
  tiny.save(path)
  back = models.load(path)
  x = np.random.RandomState(8).rand(3, 32, 32, 3).astype(np.float32)
  np.testing.assert_array_equal(back(x).numpy(), tiny(x).numpy())
  assert back.get_layer("stage1_block0").get_config() == tiny.get_layer(
      "stage1_block0").get_config()


def _passes(net):
  fn = lambda z: net(z, training=True)
  return objective_base.Passes(fn, fn, fn)


def test_lot_objective_is_reference_loss():
  """ce - gamma * relu(cert): cert = (y_y - max_{j != y} y_j) / (sqrt(2) L) without LLN,
  min_j (y_y - y_j) / (||w_y - w_j|| L) with LLN (utils.py ortho/lln_certificates)."""
  logits = tf.constant([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
  labels = tf.constant([0, 0])
  w = tf.constant([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])          # [d=2, K=3]
  got = lot.certificate_regularizer_radius(logits, labels, w, 4.0, lln=False).numpy()
  np.testing.assert_allclose(got, [1 / (math.sqrt(2) * 4), -3 / (math.sqrt(2) * 4)], rtol=1e-6)
  got = lot.certificate_regularizer_radius(logits, labels, w, 4.0, lln=True).numpy()
  # rows w_0 = (1, 0), w_1 = (0, 2), w_2 = (0, 0): ||w_0 - w_1|| = sqrt(5), ||w_0 - w_2|| = 1.
  want0 = min(1 / (math.sqrt(5) * 4), 3 / (1 * 4))
  want1 = min(-3 / (math.sqrt(5) * 4), -1 / 4)
  np.testing.assert_allclose(got, [want0, want1], rtol=1e-6)


def test_lot_objective_losses_and_registry():
  from rgd.training import objectives  # pylint: disable=g-import-not-at-top
  assert objectives.OBJECTIVES["lot"] is objective.LOT
  keras.utils.set_random_seed(1)
  net = certified_models.lipconvnet(5, 10, init_channels=2)
  obj = objective.CertifiedObjective("lot", 36 / 255, gamma=0.5)
  obj.bind(net, tf.Variable(0), 10)
  x, y = make_images(4, seed=9)
  images, soft = tf.constant(x / 255.0, tf.float32), tf.one_hot(y, 10)
  out = obj.losses(_passes(net), objective_base.StepBatch(images, soft, tf.constant([0, 0])))
  logits = net(images).numpy()
  ce = -np.log(np.exp(logits[np.arange(4), y]) / np.exp(logits).sum(1))
  np.testing.assert_allclose(out.parts["ce"].numpy(), ce, rtol=1e-5)
  top = logits[np.arange(4), y]
  runner = np.where(np.eye(10)[y] > 0, -np.inf, logits).max(1)
  cert = (top - runner) * 0.2507 / math.sqrt(2)
  np.testing.assert_allclose(out.parts["total"].numpy(), ce - 0.5 * np.maximum(cert, 0),
                             rtol=1e-5, atol=1e-6)
  assert out.adv_logits.shape == (4, 11)


def _train(net, x, y, steps=40):
  images, soft = tf.constant(x / 255.0, tf.float32), tf.one_hot(y, 10)
  obj = objective.CertifiedObjective("lot", 36 / 255)
  obj.bind(net, tf.Variable(0), steps)
  opt = keras.optimizers.Adam(0.01)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      parts = obj.losses(_passes(net), objective_base.StepBatch(images, soft,
                                                                tf.constant([0, 0]))).parts
      loss = tf.reduce_mean(parts["total"])
    opt.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
    return loss
  losses = [float(step()) for _ in range(steps)]
  assert losses[-1] < 0.5 * losses[0]
  return net


@pytest.mark.slow
def test_attacks_never_break_a_certified_point():
  keras.utils.set_random_seed(2)
  x, y = make_images(24, seed=10)   # make_images' class colours depend on the seed
  net = _train(certified_models.lipconvnet(5, 10, init_channels=4), x, y, steps=25)
  x = x.astype(np.float32) / 255
  result = certificate.certify(net, x, y)
  radius = result["radius"][result["correct"]]
  assert (radius > 0).sum() >= 5, "too few certified points for a meaningful test"
  eps = float(np.median(radius[radius > 0]))
  certified = result["correct"] & (result["radius"] > eps)

  def robust_at(eps, steps, all_attacks=True):
    model_fn = lambda z: net(z, training=False)
    robust = np.ones(len(y), bool)
    # PGD-L2 (normalised-gradient steps of 2.5 eps / steps on the margin loss), APGD-CE, APGD-T.
    pgd = attacks.PGD(attacks.optimizers.steepest_ascent("l2", 2.5 * eps / steps), steps,
                      project_fn=attacks.projections.project_fn("l2", eps),
                      loss_fn=attacks.losses.margin_loss, norm="l2", eps=eps, name="pgd_l2")
    suite = [pgd]
    if all_attacks:
      suite += [attacks.APGD("l2", eps, "ce", steps, 1),
                attacks.APGDTargeted("l2", eps, steps, 1, 2)]
    for attack in suite:
      x_adv = cascade.compile_attack(attack, model_fn)(
          tf.constant(x), tf.constant(y, tf.int32), tf.constant([0, 1], tf.int32)).numpy()
      assert np.all(np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1) <= eps * 1.00001)
      robust &= np.argmax(net(x_adv).numpy(), axis=1) == y
    return robust
  # The attacks see the network the certificate certified (W frozen, as inside certify).
  with lot.frozen_weights(net):
    assert np.all(robust_at(eps, 10)[certified]), "an attack broke a certified point"
    # Not vacuous: at 5x the largest certified radius the attacks break correct points.
    big = 5 * float(result["radius"].max())
    assert not robust_at(big, 5, all_attacks=False)[result["correct"]].all()


def test_validation_and_report_certify_lot_models(tiny, tmp_path):
  """The trainer's certified validation and rgd.certify's report take LOT models as L2."""
  from rgd.evaluation import certified as certified_eval  # pylint: disable=g-import-not-at-top
  from rgd.training import validation  # pylint: disable=g-import-not-at-top
  x, y = make_images(8, seed=12)
  clean, cert = validation.make_certified_validator(tiny, 36 / 255, x, y)(0)
  result = certificate.certify(tiny, x, y)
  assert clean == float(result["correct"].mean())
  assert cert == float(np.mean(result["correct"] & (result["radius"] > 36 / 255)))
  report = certified_eval.certify_model(tiny, x, y, 36 / 255, output_dir=str(tmp_path))
  assert report["norm"] == "l2" and report["lipschitz"]["kind"] == "lot"
  assert report["lipschitz"]["body_lipschitz"] == result["info"]["body_lipschitz"]
  assert os.path.exists(os.path.join(tmp_path, "certify_l2_0.141176.json"))


def test_spectral_bound_is_the_largest_singular_value():
  rng = np.random.RandomState(13)
  for shape in ((5, 3, 7), (4, 6, 2)):
    w = rng.randn(*shape) + 1j * rng.randn(*shape)
    want = np.linalg.svd(w, compute_uv=False).max()
    assert want <= lot.spectral_bound(w) <= want * (1 + 2e-6)


def test_frozen_weights_are_the_ones_computed_and_certified(tiny):
  """Inside lot.frozen_weights (what certificate.certify runs in) every layer multiplies with
  the W its bound is computed from; outside, W is computed afresh from the kernel."""
  x = np.random.RandomState(14).rand(4, 32, 32, 3).astype(np.float32)
  free = tiny(x).numpy()
  conv = tiny.get_layer("stage2_block1")
  with lot.frozen_weights(tiny):
    frozen = conv.frozen
    assert frozen is not None and conv.realised_spectrum() is frozen
    np.testing.assert_allclose(tiny(x).numpy(), free, atol=1e-6)
    with tf.GradientTape() as tape:   # the frozen W is a constant: no gradient to the kernel
      y = tf.reduce_sum(conv(tf.random.normal([2, 16, 16, 8])))
    assert tape.gradient(y, conv.kernel) is None
    assert conv.certified_lipschitz() == lot.spectral_bound(frozen)
    np.testing.assert_array_equal(certificate.lipschitz_info(tiny)["head_kernel"],
                                  tiny.get_layer("logits").frozen)
  assert conv.frozen is None and tiny.get_layer("logits").frozen is None
