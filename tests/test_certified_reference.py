"""Certified training as the reference code trains it: one test per departure from it that
was fixed; each fails on the old behaviour (named in its docstring)."""
import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import cli
from rgd.certified import layers, linf_dist, models
from rgd.training import loop  # pylint: disable=unused-import  (registers the configurables)
from rgd.training import optimizers

EDM_GINS = ["gin/gloro_liresnet_xs_edm.gin", "gin/gloro_liresnet_s_edm.gin",
            "gin/gloro_liresnet_m_edm.gin", "gin/gloro_liresnet_l_edm.gin",
            "gin/linf_dist_net_edm.gin", "gin/sortnet_edm.gin"]


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _query(gin_file, name):
  cli.parse_gin([gin_file], ["GENERATED='unused-*.tfrecord'"])
  return gin.query_parameter(name)


@pytest.mark.parametrize("gin_file", EDM_GINS)
def test_certified_recipes_train_on_hard_generated_labels(gin_file):
  """Old: generated.gin's 0.1 smoothing on 70% of every batch."""
  assert _query(gin_file, "train_and_evaluate.generated_label_smoothing") == 0.0


def test_recipe_optimizers_are_the_references():
  """Old: Keras Adam defaults (beta_2 0.999, eps 1e-7), per-variable clipnorm 3, no AdamW."""
  expect = {"gin/gloro_liresnet_xs.gin": ("adamw", 0.999, 1e-8, 1e-4, 3.0, None),
            "gin/linf_dist_net_edm.gin": ("adam", 0.99, 1e-10, None, None, None),
            "gin/sortnet_edm.gin": ("adamw", 0.99, 1e-10, 0.02, None, ["scale"])}
  for path, (name, beta_2, eps, wd, clip, decay_only) in expect.items():
    gin.clear_config()
    cli.parse_gin([path], ["GENERATED='unused-*.tfrecord'"])
    opt = optimizers.make_optimizer(1e-3)
    assert type(opt).__name__.lower() == name, path
    assert (opt.beta_2, opt.epsilon, opt.global_clipnorm, opt.clipnorm) == (
        beta_2, eps, clip, None), path
    if wd is not None:
      assert opt.weight_decay == wd, path
    if decay_only is not None:
      assert gin.query_parameter("_make_optimizer.decay_only") == decay_only, path


def test_global_clipnorm_clips_all_gradients_together():
  """Old: clipnorm=3 clips each variable to norm 3 (3 and 4 -> 3 and 3)."""
  a, b = keras.Variable([0.0, 0.0]), keras.Variable([0.0, 0.0])
  opt = optimizers.make_optimizer(1.0, "sgd", global_clipnorm=3.0)
  opt.apply([tf.constant([3.0, 0.0]), tf.constant([0.0, 4.0])], [a, b])
  # Global norm 5 -> both scaled by 3/5; Nesterov's first step is -(1 + 0.9) * lr * g.
  np.testing.assert_allclose(a.numpy(), [-1.9 * 1.8, 0.0], rtol=1e-5)
  np.testing.assert_allclose(b.numpy(), [0.0, -1.9 * 2.4], rtol=1e-5)


def test_adamw_decay_only_decays_the_logit_scale():
  """SortNet main.py: weight decay 0 for the distance layers' parameters."""
  w, s = keras.Variable(np.ones(3, "f"), name="weight"), keras.Variable(1.0, name="scale")
  opt = optimizers.make_optimizer(0.1, "adamw", weight_decay=0.5, decay_only=["scale"])
  opt.apply([tf.ones(3), tf.constant(1.0)], [w, s])
  # Adam's first step is lr * g / |g| = 0.1; decoupled decay lr * wd * w = 0.05 on s only.
  np.testing.assert_allclose(w.numpy(), 0.9, rtol=1e-5)
  np.testing.assert_allclose(s.numpy(), 0.85, rtol=1e-5)


def test_logit_scale_learns_at_its_own_rate():
  """L_inf-dist-net-v2 --scalar-lr 0.006 with --lr 0.03: the scalar moves 0.2 times as far.
  Old: one learning rate."""
  layer = layers.LogitScale(lr_ratio=0.2)
  layer.build(())
  assert float(layer.value()) == pytest.approx(1.0)
  opt = keras.optimizers.Adam(0.03)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(tf.constant([1.0, 2.0])))
  opt.apply(tape.gradient(loss, [layer.scale]), [layer.scale])
  # d loss / d s = -3 < 0: Adam moves v up by lr = 0.03, hence s by 0.2 * 0.03.
  assert float(layer.value()) == pytest.approx(1.0 + 0.006, abs=1e-6)


def test_sortnet_starts_without_identity_init_and_linf_dist_net_with_it():
  """SortNet commands/cifar8_255.sh passes no identity_val. Old: 10 for both."""
  keras.utils.set_random_seed(0)
  sort = models.sortnet(4, 32, input_shape=(4, 4, 2), dropout=True)
  dist = models.linf_dist_net(4, 32, input_shape=(4, 4, 2))
  assert all(l.identity_val is None for l in linf_dist.dist_layers(sort))
  w = linf_dist.dist_layers(dist)[1].weight.numpy()
  assert np.all(w[np.arange(32), np.arange(32)] == -10.0)


def test_linf_nets_normalise_with_the_references_scalar_std():
  """Both references: (x - mean) / 0.2009, eps / 0.2009. Old: raw [0, 1] pixels."""
  net = models.sortnet(3, 8, input_shape=(2, 2, 3), dropout=True)
  assert linf_dist.input_std(net) == 0.2009
  x = np.full((1, 2, 2, 3), 0.5, np.float32)
  norm = net.get_layer("normalize")(x).numpy()
  np.testing.assert_allclose(norm[0, 0, 0], (0.5 - np.array([0.4914, 0.4822, 0.4465])) / 0.2009,
                             rtol=1e-5)


def test_subset_mask_is_shared_per_sub_batch_with_one_count():
  mask = layers.subset_mask(70, 200, 0.7, tf.constant([3, 1])).numpy()
  assert mask.shape == (70, 200)
  assert np.all(mask[:32] == mask[0]) and np.all(mask[32:64] == mask[32])
  assert np.all(mask[64:] == mask[64]) and not np.all(mask[0] == mask[32])
  counts = mask.sum(axis=1)
  assert np.all(counts == counts[0]) and abs(counts[0] - 140) < 4 * np.sqrt(200 * .21)


def _layer(q, dropout, d=12, units=5, seed=0):
  layer = layers.LinfDist(units, mean_shift=False, sort_q=q, sort_truncate=d, dropout=dropout)
  layer.build((None, d))
  layer.weight.assign(np.random.RandomState(seed).normal(size=(d, units)).astype(np.float32))
  return layer


def test_sortnet_dropout_expectation_is_the_inference_sort_neuron():
  """norm_dist.py: the distance over a random subset, whose mean is the sort neuron with q.
  Old: dropout masked the sort neuron's input, expectation about the neuron with q^2."""
  q, draws = 0.6, 400
  layer = _layer(q, dropout=True)
  x = np.random.RandomState(1).uniform(size=(1, 12)).astype(np.float32)
  batch = np.repeat(x, 32, axis=0)                     # one sub-batch: one mask per call
  samples = np.stack([layer(batch, training=True).numpy()[0] for _ in range(draws)])
  exact = layer(x).numpy()[0]
  stderr = samples.std(axis=0) / np.sqrt(draws)
  assert np.all(np.abs(samples.mean(axis=0) - exact) < 4 * stderr + 1e-6)


def test_sortnet_dropout_uses_the_annealed_p_over_the_kept_inputs():
  """Every layer uses p (8 to 1000, then inf). Old: sort layers ignored p."""
  layer = _layer(0.7, dropout=True)
  layer.p.assign(3.0)
  x = np.random.RandomState(2).uniform(size=(40, 12)).astype(np.float32)
  seed = tf.stack([tf.cast(layer.calls, tf.int32), tf.constant(layer.index)])
  keep = layers.subset_mask(40, 12, 0.7, seed).numpy()
  y = layer(x, training=True).numpy()
  z = np.abs(x[:, :, None] - layer.weight.numpy()[None]) * keep[:, :, None]
  np.testing.assert_allclose(y, (z ** 3).sum(axis=1) ** (1 / 3), rtol=1e-4)


def test_mean_shift_of_a_dropped_output_is_over_the_sub_batches_that_keep_it():
  """MeanShiftDropout with `index`: layer k's unit j is averaged where layer k+1 keeps it."""
  net = models.sortnet(3, 16, input_shape=(2, 2, 1), q=0.5, dropout=True)
  x = np.random.RandomState(3).uniform(size=(64, 2, 2, 1)).astype(np.float32)
  first = net.get_layer("dist0")
  seed = tf.stack([tf.cast(first.calls, tf.int32), tf.constant(1)])
  keep = layers.subset_mask(64, 16, 0.5, seed).numpy().astype(np.float64)
  h = net.get_layer("normalize")(x).numpy().reshape(64, -1)
  y = np.abs(h[:, :, None] - first.weight.numpy()[None]).max(axis=1)   # p = inf
  net(x, training=True)
  expect = 0.1 * (keep * y).sum(0) / np.maximum(keep.sum(0), 1e-10)     # momentum 0.1 from 0
  np.testing.assert_allclose(first.running_mean.numpy(), expect, rtol=1e-4)


def test_recalibrated_mean_shift_is_the_inference_mean_over_the_data():
  """main.py update_bn before every test. Old: the training-time running mean stayed."""
  keras.utils.set_random_seed(4)
  net = models.sortnet(4, 16, input_shape=(2, 2, 1), q=0.6, dropout=True)
  x = np.random.RandomState(4).uniform(size=(50, 2, 2, 1)).astype(np.float32)
  net(x, training=True)
  linf_dist.recalibrate(net, x, batch_size=50)
  h = net.get_layer("normalize")(x).numpy().reshape(50, -1).astype(np.float64)
  for layer in linf_dist.dist_layers(net)[:-1]:
    w = layer.weight.numpy().astype(np.float64)
    z = np.abs(h[:, :, None] - w[None])
    if layer.sort_q is None:
      d = z.max(axis=1)
    else:
      top = -np.sort(-z, axis=1)[:, :layer.sort_truncate]
      d = np.einsum("btn,t->bn", top, layers.sort_coefficients(layer.sort_q, top.shape[1]))
    np.testing.assert_allclose(layer.running_mean.numpy(), d.mean(axis=0), rtol=1e-4,
                               atol=1e-5)
    h = d - d.mean(axis=0)


def test_liresnet_block_kernels_start_as_hu23():
  """hu23 LinearRes: randn(planes, planes, 3, 3) / (9 planes). Old: zeros."""
  keras.utils.set_random_seed(5)
  block = layers.LiResNetBlock(3)
  block.build((None, 8, 8, 64))
  k = block.kernel.numpy()
  assert abs(k.std() * 9 * 64 - 1.0) < 0.05 and abs(k.mean()) < 1e-4
