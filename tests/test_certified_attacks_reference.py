"""An independent soundness check: foolbox's and ART's attacks (L2 / Linf PGD, ART's APGD with
the CE and DLR losses of AutoAttack) at the certified radius break none of the certified points
of a small trained GloRo net and a small trained SortNet. Skipped without foolbox or ART."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from test_certified_soundness import SIZE, _train, test_data  # noqa: F401  (fixture)
from rgd.certified import certificate, models

fb = pytest.importorskip("foolbox")
art_attacks = pytest.importorskip("art.attacks.evasion")
art_classifiers = pytest.importorskip("art.estimators.classification")


def _reference_attacks(model, norm, eps, x, y):
  """Per example: True when no attack found an adversarial example within eps."""
  robust = np.ones(len(y), bool)

  def record(x_adv):
    diff = (x_adv - x).reshape(len(x), -1)
    size = np.linalg.norm(diff, axis=1) if norm == "l2" else np.abs(diff).max(axis=1)
    inside = size <= eps * (1 + 1e-4) + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    robust[inside] &= np.argmax(model(x_adv.astype(np.float32)).numpy(), axis=1)[inside] == y[
        inside]

  fmodel = fb.TensorFlowModel(model, bounds=(0, 1))
  pgd = fb.attacks.L2PGD(steps=40) if norm == "l2" else fb.attacks.LinfPGD(steps=40)
  _, advs, _ = pgd(fmodel, tf.constant(x), tf.constant(y, tf.int64), epsilons=eps)
  record(advs.numpy())
  classifier = art_classifiers.TensorFlowV2Classifier(
      model=model, nb_classes=10, input_shape=x.shape[1:], clip_values=(0.0, 1.0),
      loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  for loss in ("cross_entropy", "difference_logits_ratio"):
    apgd = art_attacks.AutoProjectedGradientDescent(
        classifier, norm=2 if norm == "l2" else np.inf, eps=eps, eps_step=eps / 4, max_iter=40,
        nb_random_init=1, loss_type=loss, verbose=False)
    record(apgd.generate(x, y=y))
  return robust


def _check(model, x, y):
  result = certificate.certify(model, x, y)
  radius = result["radius"][result["correct"]]
  assert (radius > 0).sum() >= 5, "too few certified points for a meaningful test"
  eps = float(np.median(radius[radius > 0]))
  result = certificate.certify(model, x, y, radii=[eps])
  certified = result["correct"] & result["certified_at"][eps]
  robust = _reference_attacks(model, result["info"]["norm"], eps, x, y)
  assert np.all(robust[certified]), "a reference attack broke a certified point"
  # Not vacuous: at 5x the largest finite certified radius the same attacks break points.
  big = min(5 * float(result["radius"][np.isfinite(result["radius"])].max()), 1.0)
  assert not _reference_attacks(model, result["info"]["norm"], big, x, y)[
      result["correct"]].all()


@pytest.mark.slow
def test_reference_attacks_break_no_certified_gloro_point(test_data):  # noqa: F811
  keras.utils.set_random_seed(0)
  net = _train(models.liresnet(1, 8, input_shape=(SIZE, SIZE, 3)), "gloro", 0.5, 60, 0.01)
  _check(net, *test_data)


@pytest.mark.slow
def test_reference_attacks_break_no_certified_sortnet_point(test_data):  # noqa: F811
  keras.utils.set_random_seed(0)
  net = models.sortnet(3, 32, input_shape=(SIZE, SIZE, 3), q=0.7, dropout=True)
  _check(_train(net, "linf_dist", 8 / 255, 40, 0.05, p_anneal=(0.1, 0.5)), *test_data)
