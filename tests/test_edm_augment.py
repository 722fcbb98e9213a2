"""rgd.edm.augment_pipe is NVlabs/edm's AugmentPipe(p=0.12) for CIFAR-10: each transform on a
hand-computed case, p = 0 leaves images untouched, the 9 labels encode what was applied, and the
draws are stateless (replayed on resume, independent of how the batch is split)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from rgd.edm import augment_pipe as ap

H = 32
YY, XX = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")


def _params(n=1, **values):
  p = {k: tf.zeros([n]) for k in ("xflip", "yflip", "scale", "rotate", "aniso", "aniso_angle",
                                   "tx", "ty")}
  p.update({k: tf.constant(np.broadcast_to(v, [n]), tf.float32) for k, v in values.items()})
  return p


def _random_images(n=2, size=H, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)


def test_p0_is_identity():
  images = _random_images(4)
  out, labels = ap.augment(images, [1, 2], p=0.0)
  # The geometric pass still runs (as augment.py does), an identity up to float rounding.
  np.testing.assert_allclose(out.numpy(), images, atol=1e-5)
  assert not np.any(labels.numpy())


def test_flips_are_exact():
  images = _random_images(3)
  out = ap.flips(tf.constant(images), _params(3, xflip=[1, 0, 1], yflip=[0, 1, 1])).numpy()
  np.testing.assert_array_equal(out[0], images[0, :, ::-1])
  np.testing.assert_array_equal(out[1], images[1, ::-1])
  np.testing.assert_array_equal(out[2], images[2, ::-1, ::-1])


def test_integer_translation_shifts_pixels():
  # translate_frac draw w -> w * W * 0.125 pixels (augment.py translate_frac_std): at W = 8, w = 1
  # is one pixel right (x), w = -1 one pixel up (y); exact away from the entering edge.
  images = _random_images(2, size=8)
  params = _params(2, tx=[1.0, 0.0], ty=[0.0, -1.0])
  out = ap.apply_geometric(tf.constant(images), ap.inverse_transform(params, 8, 8)).numpy()
  np.testing.assert_allclose(out[0, :, 1:], images[0, :, :-1], atol=1e-5)
  np.testing.assert_allclose(out[1, :-1], images[1, 1:], atol=1e-5)


@pytest.mark.parametrize("name,values,matrix", [
    # scale: draw w -> s = 2 ** (0.2 w); G_inv = diag(1 / s): w = 5 zooms in 2x.
    ("scale", dict(scale=5.0), [[0.5, 0], [0, 0.5]]),
    # rotate_frac: G_inv = rotate2d_inv(-w) = [[cos w, -sin w], [sin w, cos w]].
    ("rotate", dict(rotate=0.3), [[math.cos(0.3), -math.sin(0.3)],
                                  [math.sin(0.3), math.cos(0.3)]]),
    # aniso with angle 0: s = 2 ** (0.2 w), G_inv = diag(1 / s, s); w = 2.5 -> s = sqrt(2).
    ("aniso", dict(aniso=2.5), [[2 ** -0.5, 0], [0, 2 ** 0.5]]),
    # aniso at angle pi / 2: R(-r) diag(1 / s, s) R(r) swaps the axes' factors.
    ("aniso90", dict(aniso=2.5, aniso_angle=math.pi / 2), [[2 ** 0.5, 0], [0, 2 ** -0.5]]),
])
def test_geometric_transform_on_a_ramp(name, values, matrix):
  del name
  g = ap.inverse_transform(_params(**values), H, H).numpy()[0]
  np.testing.assert_allclose(g[:2, :2], matrix, atol=1e-6)
  # The image is f(x, y) = 0.05 x + 0.03 y - 0.4; output pixel (x, y) shows f at G_inv (x - c,
  # y - c) + c (c = 15.5, the centre). Away from the reflected border the result is that value
  # up to the sym6 up/down resampling, which is not exact at fractional positions: 1e-3 here
  # (augment.py's own result, checked side by side with it: docs/generative.md).
  ramp = (0.05 * XX + 0.03 * YY - 0.4).astype(np.float32)[None, :, :, None]
  out = ap.apply_geometric(tf.constant(ramp), ap.inverse_transform(_params(**values), H, H))
  c = (H - 1) / 2
  m = np.array(matrix)
  sx = m[0, 0] * (XX - c) + m[0, 1] * (YY - c) + c
  sy = m[1, 0] * (XX - c) + m[1, 1] * (YY - c) + c
  want = 0.05 * sx + 0.03 * sy - 0.4
  np.testing.assert_allclose(out.numpy()[0, 12:20, 12:20, 0], want[12:20, 12:20], atol=2e-3)
  assert np.abs(out.numpy()[0, 12:20, 12:20, 0] - ramp[0, 12:20, 12:20, 0]).max() > 0.02


def test_labels_encode_what_was_applied():
  images = _random_images(64, size=8, seed=1)
  out, labels = ap.augment(images, [7, 8])   # p = 0.12
  out, labels = out.numpy(), labels.numpy()
  assert labels.shape == (64, 9)
  assert set(np.unique(labels[:, :2])) <= {0.0, 1.0}
  # x-flip has multiplier 1e8 (train.py): about half the images, whatever p.
  assert 16 < labels[:, 0].sum() < 48
  plain = ~np.any(labels[:, 1:], axis=1)   # nothing but maybe an x-flip
  assert 20 < plain.sum() < 64 and (~plain).sum() > 5   # (1 - 0.12) ** 5 ~ 0.53 of 64 plain
  for i in np.nonzero(plain)[0]:
    want = images[i, :, ::-1] if labels[i, 0] else images[i]
    np.testing.assert_allclose(out[i], want, atol=1e-5)
  for i in np.nonzero(~plain)[0]:
    assert min(np.abs(out[i] - images[i]).max(), np.abs(out[i] - images[i, :, ::-1]).max()) > 1e-3
  # Labels are the draws: rotation as (cos - 1, sin), anisotropy as w (cos r, sin r).
  params = ap.draw(tf.constant([7, 8]), 64)
  np.testing.assert_allclose(labels[:, 3], np.cos(params["rotate"].numpy()) - 1, atol=1e-6)
  np.testing.assert_allclose(labels[:, 5:7], np.stack(
      [params["aniso"] * np.cos(params["aniso_angle"]),
       params["aniso"] * np.sin(params["aniso_angle"])], 1), atol=1e-6)


def test_replayable_and_split_independent():
  images = _random_images(6, size=8, seed=2)
  a_img, a_lab = ap.augment(images, [3, 4], p=0.5)
  b_img, b_lab = ap.augment(images, [3, 4], p=0.5)   # a resumed step: same seed, same result
  np.testing.assert_array_equal(a_img.numpy(), b_img.numpy())
  np.testing.assert_array_equal(a_lab.numpy(), b_lab.numpy())
  _, c_lab = ap.augment(images, [3, 5], p=0.5)
  assert np.abs(c_lab.numpy() - a_lab.numpy()).max() > 0
  # A replica holding rows 2..3 of the global batch draws what those rows draw in one batch.
  _, part = ap.augment(images[2:4], [3, 4], p=0.5, rows=(2, 6))
  np.testing.assert_array_equal(part.numpy(), a_lab.numpy()[2:4])
