"""Tests of rgd.augment: exact label/pixel bookkeeping of the mixing ops, the CutMix box-area
distribution, determinism eagerly vs inside tf.data.map, the image ops against PIL, parameter
errors, the data-pipeline hook and the PNG tool. (TRADES with soft labels: tests/test_trades.py.)"""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from rgd import augment
from rgd.data import datasets
from rgd.data import tfrecord
from rgd.augment import image_ops
from conftest import make_images

SEED = tf.constant([3, 7], tf.int32)


def encoded_batch(b, size=16):
  """Images whose pixel value encodes (source image, row, column), with one-hot labels over the
  b images: every output pixel of a gather-based op tells where it came from."""
  j, r, c = np.meshgrid(np.arange(b), np.arange(size), np.arange(size), indexing="ij")
  code = (j * size * size + r * size + c).astype(np.float32)
  image = np.repeat(code[..., None], 3, axis=-1)
  return {"image": tf.constant(image), "label": tf.eye(b), "is_real": tf.ones([b], tf.bool)}


def decode(image, size=16):
  code = np.asarray(image)[..., 0].astype(np.int64)
  return code // (size * size), (code // size) % size, code % size


def random_batch(b=8, size=16, num_classes=10, seed=0):
  x, y = make_images(b, num_classes, size, seed)
  return {"image": datasets.to_float(x), "label": datasets.soft_labels(y, num_classes),
          "is_real": tf.constant(np.arange(b) % 2 == 0)}


def label_weights_from_pixels(image, b, size=16):
  src, _, _ = decode(image, size)
  return np.stack([np.bincount(s.ravel(), minlength=b) for s in src]) / float(size * size)


# ----------------------------------------------------------------------------------------------
# CutMix


@pytest.mark.parametrize("kwargs", [{}, {"window_length": 6}, {"placement": "clip"}])
def test_cutmix_pasted_box_equals_label_weights(kwargs):
  b, size = 16, 16
  out = augment.CutMix(**kwargs)(encoded_batch(b, size), SEED)
  src, rows, cols = decode(out["image"], size)
  # Pasted pixels stay where they were: CutMix moves a box between images, not within them.
  np.testing.assert_array_equal(rows, np.broadcast_to(np.arange(size)[:, None], rows.shape))
  np.testing.assert_array_equal(cols, np.broadcast_to(np.arange(size)[None, :], cols.shape))
  labels = out["label"].numpy()
  np.testing.assert_array_equal(labels, label_weights_from_pixels(out["image"], b, size))
  pasted_somewhere = 0
  for i in range(b):
    foreign = src[i] != i
    if foreign.any():  # the pasted region is one axis-aligned rectangle from one partner
      pasted_somewhere += 1
      ys, xs = np.nonzero(foreign)
      assert foreign.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
      assert len(np.unique(src[i][foreign])) == 1
      if "window_length" in kwargs:
        assert foreign.sum() == 36
  assert pasted_somewhere >= b // 2
  np.testing.assert_array_equal(out["is_real"], np.ones(b, bool))


def test_cutmix_probability_zero_is_identity():
  batch = random_batch()
  out = augment.CutMix(probability=0.)(batch, SEED)
  np.testing.assert_array_equal(out["image"], batch["image"])
  np.testing.assert_array_equal(out["label"], batch["label"])


def _ks_statistic(samples, cdf):
  x = np.sort(samples)
  n = len(x)
  f = cdf(x)
  return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


@pytest.mark.parametrize("alpha,cdf", [
    (1.0, lambda x: x),                        # Beta(1, 1): uniform, seed 000's setting
    (2.0, lambda x: x * x * (3. - 2. * x)),    # Beta(2, 2)
])
def test_cutmix_box_area_follows_beta(alpha, cdf):
  n, size = 4000, 32
  _, _, h, w = augment.sample_boxes(tf.constant([0, 42]), n, size, size, alpha=alpha)
  area = (h * w).numpy() / float(size * size)
  # Kolmogorov-Smirnov at the 1% level: critical value 1.63 / sqrt(n).
  assert _ks_statistic(area, cdf) < 1.63 / np.sqrt(n)
  # The test has power: the other Beta, or DeepMind's border-clipped boxes, are rejected.
  other = (lambda x: x * x * (3. - 2. * x)) if alpha == 1.0 else (lambda x: x)
  assert _ks_statistic(area, other) > 1.63 / np.sqrt(n)
  _, _, hc, wc = augment.sample_boxes(tf.constant([0, 42]), n, size, size, alpha=alpha,
                                      placement="clip")
  assert _ks_statistic((hc * wc).numpy() / float(size * size), cdf) > 1.63 / np.sqrt(n)


# ----------------------------------------------------------------------------------------------
# MixUp and RICAP


def test_mixup_labels_sum_to_one_and_match_pixels():
  b = 8
  batch = random_batch(b)
  batch["label"] = tf.eye(b)  # one class per image: the label row is the mixing weights
  out = augment.MixUp(alpha=1.0)(batch, SEED)
  weights = out["label"].numpy()
  np.testing.assert_allclose(weights.sum(1), 1., atol=1e-6)
  assert ((weights > 0).sum(1) <= 2).all() and (weights.max(1) < 1.).sum() >= b // 2
  expected = np.einsum("ij,jhwc->ihwc", weights, batch["image"].numpy())
  np.testing.assert_allclose(out["image"], expected, atol=1e-6)


def test_ricap_labels_are_tile_areas_and_tiles_are_crops():
  b, size = 12, 16
  out = augment.RICAP(beta=0.3)(encoded_batch(b, size), SEED)
  labels = out["label"].numpy()
  np.testing.assert_allclose(labels.sum(1), 1., atol=1e-6)
  np.testing.assert_allclose(labels, label_weights_from_pixels(out["image"], b, size), atol=1e-7)
  src, rows, cols = decode(out["image"], size)
  out_r, out_c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  # The top-left tile is the image's own (unless Beta(0.3, 0.3) made it empty).
  assert (src[:, 0, 0] == np.arange(b)).sum() >= b // 2
  mixed = 0
  for i in range(b):
    tiles = {}
    for key, dy, dx in zip(zip(src[i].ravel()), (rows[i] - out_r).ravel(),
                           (cols[i] - out_c).ravel()):
      tiles.setdefault(key, set()).add((dy, dx))
    # Each source contributes one rigid crop (a constant offset), unless the same image fills
    # several tiles.
    mixed += len(tiles) > 1
    assert sum(len(v) for v in tiles.values()) <= 4
  assert mixed >= b // 2


# ----------------------------------------------------------------------------------------------
# Cutout and the per-image policies


def test_cutout_window_and_labels():
  batch = random_batch(16, size=32)
  out = augment.Cutout(window_length=18, fill_value=0.5)(batch, SEED)
  np.testing.assert_array_equal(out["label"], batch["label"])
  changed = np.any(out["image"].numpy() != batch["image"].numpy(), axis=-1)
  filled = np.all(out["image"].numpy() == 0.5, axis=-1)
  assert (changed <= filled).all()
  for f in filled:
    ys, xs = np.nonzero(f)
    assert f.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one rectangle, clipped at the border
    assert np.ptp(ys) + 1 <= 18 and np.ptp(xs) + 1 <= 18
  assert (filled.sum((1, 2)) == 18 * 18).sum() >= 1  # some windows lie wholly inside


def test_apply_per_image_equals_each_op_alone():
  x = random_batch(6)["image"]
  names = ("Identity", "Rotate", "Equalize", "Posterize")
  op = tf.constant([1, 0, 2, 3, 1, 2])
  frac = tf.constant([1., 0.5, 0., 0.75, 0.3, 0.])
  out = image_ops.apply_per_image(x, op, frac, SEED, names).numpy()
  signs = np.where(tf.random.stateless_uniform([6], SEED).numpy() < 0.5, -1., 1.)
  for i in range(6):
    fn, signed = image_ops.OPS[names[op[i]]]
    alone = fn(x[i:i + 1], frac[i:i + 1], tf.constant([signs[i] if signed else 1.], tf.float32))
    np.testing.assert_array_equal(out[i], alone[0])


@pytest.mark.parametrize("name,pil_fn", [
    ("Equalize", lambda im, f: __import__("PIL.ImageOps").ImageOps.equalize(im)),
    ("Posterize", lambda im, f: __import__("PIL.ImageOps").ImageOps.posterize(
        im, int(8 - round(4 * f)))),
    ("Solarize", lambda im, f: __import__("PIL.ImageOps").ImageOps.solarize(im, 255 * (1 - f))),
    ("ShearX", lambda im, f: im.transform(im.size, 0, (1, -0.3 * f, 0, 0, 1, 0), 0,
                                          fillcolor=(128, 128, 128))),
    ("TranslateY", lambda im, f: im.transform(im.size, 0, (1, 0, 0, 0, 1, -int(150 / 331 * 32 * f)),
                                              0, fillcolor=(128, 128, 128))),
    ("Rotate", lambda im, f: im.rotate(-30 * f, resample=0, fillcolor=(128, 128, 128))),
])
def test_image_ops_match_pil(name, pil_fn):
  """The ops reproduce PIL's (the AutoAugment reference implementation) pixel for pixel."""
  image_module = pytest.importorskip("PIL.Image")
  x8 = np.random.RandomState(1).randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  x8[1] = x8[1] // 4 + 60  # a low-contrast image, where Equalize does most
  f = 7 / 9
  op, _ = image_ops.OPS[name]
  ours = op(tf.constant(x8, tf.float32) / 255., tf.fill([3], f), tf.fill([3], -1.)).numpy()
  ref = np.stack([np.asarray(pil_fn(image_module.fromarray(im), f)) for im in x8])
  np.testing.assert_array_equal(np.round(ours * 255).astype(np.uint8), ref)


# ----------------------------------------------------------------------------------------------
# Determinism and the hook


ALL_NAMES = sorted(augment.AUGMENTATIONS) + ["autoaugment+cutout"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_same_result_eagerly_and_in_tf_data(name):
  # AugMix at width 2 (depth 1-3 drawn): the default width 3 runs the same code, one more chain
  # to trace in tf.data.
  fn = augment.make_batch_augment(name, **(dict(width=2) if name == "augmix" else {}))
  batch = random_batch(8)
  eager = fn(batch, SEED)
  ds = tf.data.Dataset.from_tensors(batch).map(lambda b: fn(b, SEED))
  graph = next(iter(ds))
  for key in ("image", "label", "is_real"):
    np.testing.assert_array_equal(eager[key], graph[key], err_msg=f"{name}: {key}")
  other = fn(batch, tf.constant([4, 7]))
  assert not np.array_equal(eager["image"], other["image"]), f"{name} ignores its seed"
  assert not np.array_equal(eager["image"], batch["image"]), f"{name} changed nothing"
  np.testing.assert_allclose(eager["label"].numpy().sum(1), 1., atol=1e-6)
  if name == "augmix":  # a convex mix of images in [0, 1] (tests/test_corruptions_augmix.py)
    image = eager["image"].numpy()
    assert image.min() >= 0 and image.max() <= 1
    assert np.abs(image - batch["image"].numpy()).mean() > 1e-3  # it does something
    assert np.abs(image - other["image"].numpy()).mean() > 1e-3


def test_make_batch_augment_baseline_and_gin():
  gin = pytest.importorskip("gin")
  assert augment.make_batch_augment("none") is None
  assert augment.make_batch_augment("pad_crop_flip") is None
  assert augment.make_batch_augment("cutout", window_length=10).window_length == 10
  with gin.unlock_config():
    gin.parse_config("rgd.augment.CutMix.window_length = 20\nCutout.probability = 0.5")
  try:
    assert augment.make_batch_augment("cutmix").window_length == 20
    assert augment.make_batch_augment("cutout").probability == 0.5
  finally:
    gin.clear_config()


@pytest.mark.parametrize("call,message", [
    (lambda: augment.Cutout(window_length=-4), "Cutout: window_length must be a positive"),
    (lambda: augment.CutMix(window_length=0), "CutMix: window_length must be a positive"),
    (lambda: augment.CutMix(probability=1.5), "CutMix: probability must be in [0, 1], got 1.5"),
    (lambda: augment.MixUp(probability=-0.1), "MixUp: probability must be in [0, 1]"),
    (lambda: augment.Cutout(probability=2), "Cutout: probability must be in [0, 1]"),
    (lambda: augment.MixUp(alpha=0.), "MixUp: alpha must be > 0"),
    (lambda: augment.RICAP(beta=-1), "RICAP: beta must be > 0"),
    (lambda: augment.CutMix(placement="centre"), "placement must be 'inside' or 'clip'"),
    (lambda: augment.RandAugment(magnitude=31), "RandAugment: magnitude must be in [0, 30]"),
    (lambda: augment.make_batch_augment("cutmux"), "Unknown augmentation 'cutmux'"),
    (lambda: augment.make_batch_augment("cutout", windw=3), "for augmentation 'cutout'"),
    (lambda: augment.make_batch_augment("cutout+mixup", alpha=1.), "ambiguous"),
])
def test_bad_parameters_give_clear_errors(call, message):
  with pytest.raises(ValueError) as e:
    call()
  assert message in str(e.value)


def test_train_dataset_with_batch_augment_has_soft_labels_summing_to_one(tmp_path):
  images, labels = make_images(40, 10, 16, seed=1)
  gen_x, gen_y = make_images(24, 10, 16, seed=2)
  pattern = str(tmp_path / "gen")
  tfrecord.write_shard(tfrecord.shard_name(pattern, 0, 1),
                       (tfrecord.serialize(x, y) for x, y in zip(gen_x, gen_y)))
  ds = datasets.make_train_dataset(images, labels, 10, global_batch_size=16, num_replicas=2,
                               generated_pattern=pattern + "-*", mixing_ratio=0.5, seed=5,
                               batch_augment_fn=augment.make_batch_augment("cutmix"),
                               generated_shuffle_buffer=8)
  mixed = 0
  for batch in ds.take(3):
    assert batch["label"].shape == (2, 8, 10)
    np.testing.assert_allclose(batch["label"].numpy().sum(-1), 1., atol=1e-6)
    mixed += int(np.sum(batch["label"].numpy().max(-1) < 0.89))  # below generated smoothing
    assert batch["is_real"].numpy().sum() == 8
  assert mixed > 0


def test_show_augmentations_writes_png_grid(tmp_path, npz_dataset):
  out = tmp_path / "grid.png"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, "tools"))
  try:
    import show_augmentations  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  show_augmentations.main([f"--dataset=npz:{npz_dataset}", f"--output={out}", "--num_images=4",
                           "--augmentations=cutmix,autoaugment", "--scale=1"])
  png = tf.io.decode_png(tf.io.read_file(str(out))).numpy()
  # 4 rows (original, pad_crop_flip, cutmix, autoaugment) x 4 columns of 32 px with 2-px frames.
  assert png.shape == (4 * 34 + 2, 4 * 34 + 2, 3)
  with pytest.raises(ValueError, match="Unknown augmentation 'bogus'"):
    show_augmentations.main([f"--dataset=npz:{npz_dataset}", f"--output={out}",
                             "--augmentations=bogus"])


def test_input_benchmark_prints_a_row_per_augmentation(capsys):
  from rgd.bench import input as bench_input  # pylint: disable=import-outside-toplevel
  bench_input.main(["--num_synthetic=256", "--batch_size=32", "--num_batches=2", "--warmup=1",
                    "--repeats=1", "--augmentations=none,cutmix", "--no_breakdown"])
  lines = capsys.readouterr().out.splitlines()
  rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
  assert set(rows) == {"none", "cutmix"}
  assert float(rows["cutmix"][0].replace(",", "")) > 0
  assert float(rows["cutmix"][1].replace(",", "")) > 0 and rows["none"][1] == "-"
