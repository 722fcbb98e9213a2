"""rgd models in ART and foolbox: the exported model (standard Keras layers,
normalisation inside, [0, 1] inputs) wrapped as `TensorFlowV2Classifier` and
`foolbox.TensorFlowModel` gives the gradients rgd's own tf.GradientTape gives, and both
libraries' PGD stays in the eps-ball and the image box."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import models
from rgd.runtime import checkpointing

EPS = 8 / 255


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A WRN-10-1 with non-trivial weights, exported and loaded back as users receive it;
  with a few images and labels."""
  model = models.get_model("wrn-10-1", head_init="haiku")
  rng = np.random.RandomState(0)
  model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                     if "moving_variance" in v.path or "gamma" in v.path
                     else w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                     for w, v in zip(model.get_weights(), model.weights)])
  path = os.path.join(str(tmp_path_factory.mktemp("art")), "model.keras")
  checkpointing.export_keras(model, path)
  x = rng.rand(4, 32, 32, 3).astype(np.float32)
  y = np.array([0, 3, 5, 9])
  return keras.models.load_model(path), x, y


def _tape_gradient(model, x, y, reduction):
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
  x = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = loss_fn(y, model(x, training=False))
  return tape.gradient(loss, x).numpy()


def test_art_classifier_gradients_and_pgd(exported):
  evasion = pytest.importorskip("art.attacks.evasion")
  classification = pytest.importorskip("art.estimators.classification")
  model, x, y = exported
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  classifier = classification.TensorFlowV2Classifier(
      model=model, nb_classes=10, input_shape=(32, 32, 3), loss_object=loss,
      clip_values=(0.0, 1.0))
  np.testing.assert_allclose(classifier.predict(x), model(x, training=False).numpy(),
                             rtol=1e-6, atol=1e-6)
  grad = classifier.loss_gradient(x, np.eye(10, dtype=np.float32)[y])
  want = _tape_gradient(model, x, y, "sum_over_batch_size")
  assert np.abs(want).max() > 0
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
  pgd = evasion.ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=2 / 255,
                                         max_iter=3, verbose=False)
  adv = pgd.generate(x, y=np.eye(10, dtype=np.float32)[y])
  assert np.abs(adv - x).max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
  assert np.abs(adv - x).max() > EPS / 2  # it moved


def test_foolbox_model_gradients_and_pgd(exported):
  fb = pytest.importorskip("foolbox")
  ep = pytest.importorskip("eagerpy")
  model, x, y = exported
  fmodel = fb.TensorFlowModel(model, bounds=(0, 1))
  images, labels = ep.astensors(tf.constant(x), tf.constant(y))

  def loss_fn(inputs):
    return ep.crossentropy(fmodel(inputs), labels).sum()

  _, grad = ep.value_and_grad(loss_fn, images)
  want = _tape_gradient(model, x, y, "sum")
  np.testing.assert_allclose(grad.numpy(), want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
  tf.random.set_seed(0)  # foolbox's random start; TF_DETERMINISTIC_OPS (conftest) requires one
  attack = fb.attacks.LinfPGD(steps=3, rel_stepsize=0.25)
  _, clipped, _ = attack(fmodel, tf.constant(x), tf.constant(y), epsilons=EPS)
  adv = clipped.numpy()
  assert np.abs(adv - x).max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
  assert np.abs(adv - x).max() > EPS / 2
