"""No attack ever returns a point outside the eps-ball or outside [0, 1]: every attack, both
norms, in float32 and under the mixed_bfloat16 policy, on a small conv net and on images with
many pixels at 0 and 1 (so that the box is active)."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from rgd.attacks import initializers, losses, optimizers, projections
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.pgd import PGD, pgd40_adam_margin
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square

ATTACKS = [
    lambda n, e: APGD(n, e, "ce", num_steps=5, num_restarts=2),
    lambda n, e: APGD(n, e, "dlr", num_steps=5),
    lambda n, e: APGDTargeted(n, e, num_steps=4, num_target_classes=2),
    lambda n, e: MultiTargeted(n, e, num_steps=4, num_restarts=2, num_targets=2),
    lambda n, e: FABTargeted(n, e, num_steps=4, num_restarts=2, num_target_classes=2),
    lambda n, e: Square(n, e, num_queries=12),
    pgd40_adam_margin,
    # The training attack (last iterate), with a large step that pushes against the ball.
    lambda n, e: PGD(optimizers.steepest_ascent(n, e), 4, initializers.uniform_init(n, e),
                     projections.project_fn(n, e), keep_best=False, loss_fn=losses.ce_loss,
                     norm=n, eps=e),
]


def _conv_net(seed):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(5)(x))


def _images(seed=0, n=6):
  rng = np.random.RandomState(seed)
  x = rng.uniform(0, 1, (n, 8, 8, 3))
  x[rng.uniform(size=x.shape) < 0.3] = 0.0
  x[rng.uniform(size=x.shape) < 0.3] = 1.0
  return x.astype(np.float32)


def _check_all(norm, eps, policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = _conv_net(0)
    if policy == "mixed_bfloat16":
      assert model(_images()[:1]).dtype == tf.bfloat16   # logits in bf16: the hard case
    x = _images()
    labels = model(x).numpy().astype(np.float32).argmax(1).astype(np.int32)
    for make in ATTACKS:
      attack = make(norm, eps)
      # Eagerly: tracing 16 attacks costs more than running their few steps; the compiled
      # path is what test_attacks_linear.py runs.
      x_adv = attack(lambda t: model(t, training=False), tf.constant(x), tf.constant(labels),
                     tf.constant([1, 2])).numpy()
      assert x_adv.dtype == np.float32
      delta = (x_adv - x).reshape(len(x), -1).astype(np.float64)
      dist = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
      # One float32 ulp of 1.0 for the rounding of x0 + eps.
      assert dist.max() <= eps + 1e-6, (attack.name, dist.max())
      assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0, attack.name
      assert np.isfinite(x_adv).all(), attack.name
  finally:
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_every_attack_stays_in_ball_and_box(norm, eps):
  _check_all(norm, eps, "float32")


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_every_attack_stays_in_ball_and_box_under_bf16(norm, eps):
  _check_all(norm, eps, "mixed_bfloat16")
