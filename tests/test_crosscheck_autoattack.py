"""tools/crosscheck_autoattack.py: the torch bridge that the reference AutoAttack attacks is the
Keras model, with TF's gradients. Skipped unless torch and pyautoattack are installed."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyautoattack")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import crosscheck_autoattack  # noqa: E402  pylint: disable=g-import-not-at-top
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from rgd import models  # noqa: E402


def test_bridge_logits_and_vjp_match_tensorflow():
  keras.utils.set_random_seed(0)
  model = models.get_model("tiny_cnn", width=4)
  head = model.get_layer("logits")
  head.kernel.assign(np.random.RandomState(0).normal(0, 1, head.kernel.shape).astype(np.float32))
  images, _ = crosscheck_autoattack.synthetic(4, seed=0)
  x = images.astype(np.float32) / 255
  upstream = np.random.RandomState(1).normal(size=(4, 10)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  logits = crosscheck_autoattack.TFModel(model)(xt)
  (logits * torch.from_numpy(upstream)).sum().backward()
  xtf = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xtf)
    expected = model(xtf, training=False)
    target = tf.reduce_sum(expected * upstream)
  np.testing.assert_allclose(logits.detach().numpy(), expected.numpy(), atol=1e-6)
  np.testing.assert_allclose(xt.grad.numpy().transpose(0, 2, 3, 1),
                             tape.gradient(target, xtf).numpy(), rtol=1e-5, atol=1e-7)
  assert np.abs(xt.grad.numpy()).max() > 0
