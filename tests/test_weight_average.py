"""Weight averaging (EMA with warm-up) and weight decay on conv/dense weights (not BN)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import models
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer, decayed_variables


def test_decay_warmup_formula():
  for t in [0, 1, 5, 100, 10_000]:
    expected = min(0.995, (1 + t) / (10 + t))
    assert float(weight_average.decay_at(t, 0.995)) == pytest.approx(expected, rel=1e-6)


def test_ema_update_matches_formula_for_weights_and_bn_statistics():
  net = models.get_model("tiny_cnn", width=4)
  avg = models.get_model("tiny_cnn", width=4)
  avg.set_weights(net.get_weights())
  ema = weight_average.WeightAverage(net, avg, tau=0.9)
  rng = np.random.RandomState(0)
  expected = [v.numpy().copy() for v in weight_average.averaged_variables(avg)]
  for t in range(3):
    for v in weight_average.averaged_variables(net):
      v.assign(rng.randn(*v.shape).astype(np.float32))
    d = min(0.9, (1 + t) / (10 + t))
    expected = [d * e + (1 - d) * v.numpy()
                for e, v in zip(expected, weight_average.averaged_variables(net))]
    ema.update(t)
  for e, a in zip(expected, weight_average.averaged_variables(avg)):
    np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6)
  # BN moving statistics are part of the average; the input normalisation is not.
  paths = [v.path for v in weight_average.averaged_variables(avg)]
  assert any("moving_mean" in p for p in paths)
  assert not any("normalize" in p for p in paths)


def test_weight_decay_only_on_conv_and_dense_weights():
  """Kernels and biases (DeepMind's `.*w$`, `.*b$`), never BN gamma/beta."""
  net = models.get_model("tiny_cnn", width=4)
  names = [v.path for v in decayed_variables(net)]
  assert names and all(n.endswith(("kernel", "bias")) for n in names)
  assert not any("bn" in n for n in names)
  n_weights = sum(1 for l in net.layers if hasattr(l, "kernel")) + sum(
      1 for l in net.layers if getattr(l, "bias", None) is not None and
      not isinstance(l, keras.layers.BatchNormalization))
  assert len(names) == n_weights


def test_train_step_gradient_includes_coupled_weight_decay():
  """With lr schedule constant and no momentum buffer yet, SGD-Nesterov's first update is
  lr * (1 + momentum) * grad; grad of BN parameters has no decay term, kernels have wd * w."""
  keras.utils.set_random_seed(0)
  net = models.get_model("tiny_cnn", width=4)
  obj = objectives.Objective(kind="standard")
  wd = 0.1
  trainer = RobustTrainer(net, obj, global_batch_size=8, weight_decay=wd)
  trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
  trainer.optimizer.build(net.trainable_variables)
  x = tf.random.stateless_uniform([8, 32, 32, 3], [0, 1])
  y = tf.one_hot(tf.range(8) % 10, 10)
  before = {v.path: v.numpy().copy() for v in net.trainable_variables}
  with tf.GradientTape() as tape:
    fn = lambda z: net(z, training=True)
    parts, _, _ = obj.losses(objectives.Passes(fn, fn, fn),
                             objectives.StepBatch(x, y, tf.constant([0, 0])))
    data_loss = tf.reduce_mean(parts["total"])
  data_grads = dict(zip([v.path for v in net.trainable_variables],
                        tape.gradient(data_loss, net.trainable_variables)))
  # (The extra training-mode pass above moved BN statistics; those do not enter the update.)
  trainer.train_step({"image": x, "label": y})
  for v in net.trainable_variables:
    g = data_grads[v.path].numpy()
    if v.path.endswith("kernel"):
      g = g + wd * before[v.path]
    expected = before[v.path] - 0.01 * (1 + 0.9) * g
    np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=v.path)
