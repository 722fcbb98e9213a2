"""AugMix: stateless (eager == tf.data), in [0, 1], the reference's mixing, replayed on resume;
the JS term; the corruption stage in a training step."""
import numpy as np
import pytest
import tensorflow as tf

from rgd import augment
from rgd.data import datasets
from rgd.augment import augmix
from rgd.training import objectives
from rgd.corruptions import networks, stage


def _batch(n=8, seed=0, size=32):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32) / 255.
  labels = tf.one_hot(rng.integers(0, 10, n), 10)
  return {"image": tf.constant(images), "label": labels}


# Eager vs tf.data (bit-identical), in [0, 1], changes the image and depends on its seed:
# tests/test_augment.py::test_same_result_eagerly_and_in_tf_data[augmix] (width 2, depth 1-3).


def test_augmix_is_a_convex_mix_of_the_image_and_its_chains():
  # width 1, depth 1, one op (AutoContrast, no level): out = (1 - m) x + m autocontrast(x).
  op = augmix.AugMix(width=1, depth=1)
  x = 0.2 + 0.5 * _batch(4)["image"]  # not yet full-range: AutoContrast changes it
  orig_ops = augmix.AUGMIX_OPS
  try:
    augmix.AUGMIX_OPS = ("AutoContrast",)
    out = op.augment(x, tf.constant([1, 2])).numpy()
  finally:
    augmix.AUGMIX_OPS = orig_ops
  lo = x.numpy().min(axis=(1, 2), keepdims=True)
  hi = x.numpy().max(axis=(1, 2), keepdims=True)
  ac = (x.numpy() - lo) / (hi - lo)
  # Solve for m per image and check one m explains every pixel.
  diff = ac - x.numpy()
  m = (out - x.numpy()).reshape(4, -1).sum(1) / diff.reshape(4, -1).sum(1)
  np.testing.assert_allclose(out, x.numpy() + m[:, None, None, None] * diff, atol=1e-5)
  assert ((m >= 0) & (m <= 1)).all()


def test_augmix_replayed_by_a_resumed_pipeline():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 16, 16, 3)).astype(np.uint8)
  labels = rng.integers(0, 10, 32)
  op = augmix.AugMix(width=2, depth=1)
  make = lambda: iter(datasets.make_train_dataset(images, labels, 10, 8, seed=1,
                                              batch_augment_fn=op))
  it = make()
  next(it)
  ckpt = tf.train.Checkpoint(iterator=it)
  path = ckpt.write("/tmp/cc/augmix_it/ckpt")
  expected = [next(it)["image"].numpy() for _ in range(2)]
  resumed = make()
  tf.train.Checkpoint(iterator=resumed).read(path).assert_consumed()
  for e in expected:
    np.testing.assert_array_equal(next(resumed)["image"].numpy(), e)


def test_jensen_shannon_by_hand():
  a, b = np.array([[2., 0.]]), np.array([[0., 1.]])
  p, q = tf.nn.softmax(a).numpy()[0], tf.nn.softmax(b).numpy()[0]
  m = (p + p + q) / 3
  kl = lambda u: (u * np.log(u / m)).sum()
  expected = (2 * kl(p) + kl(q)) / 3
  assert objectives.jensen_shannon(a, a, b).numpy()[0] == pytest.approx(expected, rel=1e-5)
  assert objectives.jensen_shannon(a, a, a).numpy()[0] == pytest.approx(0., abs=1e-6)


def test_training_step_with_ada_and_augmix_jsd():
  from rgd.training import objectives
  from rgd.training.trainer import RobustTrainer
  from rgd.corruptions import ada
  tf.keras.utils.set_random_seed(0)
  net = tf.keras.Sequential([tf.keras.Input((32, 32, 3)), tf.keras.layers.Conv2D(4, 3),
                             tf.keras.layers.BatchNormalization(), tf.keras.layers.ReLU(),
                             tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)])
  edsr = networks.EDSRCifar(num_blocks=1, features=4)
  params = {k: v + 0.05 for k, v in edsr.init(0).items()}
  corruption = stage.CorruptionStage(ada=ada.AdA(edsr, params, steps=2), augmix=True,
                                     jsd_weight=12.)
  objective = objectives.Objective(kind="standard", corruption=corruption)
  trainer = RobustTrainer(net, objective, 8, weight_decay=1e-4)
  trainer.compile(optimizer=tf.keras.optimizers.SGD(0.1))
  logs = trainer.train_step(_batch(8))
  assert set(logs) >= {"total", "ce", "jsd"}
  total, ce, jsd = (float(logs[k]) for k in ("total", "ce", "jsd"))
  assert total == pytest.approx(ce + 12. * jsd, rel=1e-5) and jsd > 0
  # The stage and the JS term wrap any objective: TRADES' parts plus the weighted JS term.
  objective = objectives.Objective(kind="trades", attack_steps=1, corruption=corruption)
  assert isinstance(objective, objectives.Corrupted) and objective.name == "trades"
  assert isinstance(objective.inner.inner, objectives.Trades)
  trainer = RobustTrainer(net, objective, 8, weight_decay=1e-4)
  trainer.compile(optimizer=tf.keras.optimizers.SGD(0.1))
  logs = trainer.train_step(_batch(8))
  total, ce, kl, jsd = (float(logs[k]) for k in ("total", "ce", "kl", "jsd"))
  assert total == pytest.approx(ce + 6. * kl + 12. * jsd, rel=1e-5) and jsd > 0 and kl > 0
  assert "adv_correct" in logs and "clean_correct" in logs


def test_keras_augmix_is_not_replayable_which_is_why_rgd_has_its_own():
  # keras.layers.AugMix draws from a SeedGenerator held in the layer: the same input and seed
  # give different outputs on the second call, so a restarted input pipeline (a fresh layer, or
  # one whose generator state is not in the iterator checkpoint) does not replay it. Its
  # defaults also differ from the paper's CIFAR setting (all_ops=True adds Brightness, Color,
  # Contrast, Sharpness, which the AugMix paper excludes as overlapping CIFAR-10-C).
  import keras
  layer = keras.layers.AugMix(seed=1, value_range=(0, 1))
  x = _batch(2, size=16)["image"].numpy()
  assert np.abs(np.asarray(layer(x)) - np.asarray(layer(x))).mean() > 1e-3
  assert layer.get_config()["all_ops"] is True
  ours = augmix.AugMix()
  np.testing.assert_array_equal(ours.augment(x, tf.constant([1, 1])).numpy(),
                                ours.augment(x, tf.constant([1, 1])).numpy())
