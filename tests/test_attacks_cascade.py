"""Cascades: each stage sees only the points still robust, the result is the pointwise worst
case, it is never above a single stage, and it is deterministic per seed."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from rgd.evaluation import cascade
from rgd.attacks import common, losses, protocol, suites
from rgd.errors import ConfigError
from rgd.attacks.apgd import APGD
from rgd.attacks.multitargeted import MultiTargeted

from test_attacks_apgd import _mlp
from test_attacks_linear import optimal_gain, separated_problem


class Recording(protocol.Attack):
  """Wraps an attack and records the images each of its runs is asked to attack (outside
  tf.function)."""

  def __init__(self, attack):
    self.attack, self.seen = attack, []
    self.name, self.norm, self.eps = attack.name, attack.norm, attack.eps

  def num_runs(self, num_classes):
    return self.attack.num_runs(num_classes)

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    self.seen.append(x0.numpy())
    return self.attack.run(model_fn, r, seeds, x0, labels, loss_fn=loss_fn)


def _setup(radii=(0.003, 0.004, 0.006)):
  return separated_problem(6, radii)


def test_each_stage_attacks_only_robust_points_and_result_is_worst_case(monkeypatch):
  # Recording runs eagerly (compile_run would trace it once).
  monkeypatch.setattr(cascade, "compile_run",
                      lambda attack, model_fn, jit_compile=False:
                      lambda r, x, y, seeds: attack.run(
                          model_fn, r, common.run_seeds(seeds, r), x, y)[0])
  model, x, labels, w, margin = _setup()
  small, big = 0.003, 0.006
  breaks_small = margin + optimal_gain(x, labels, w, "linf", small) > 0
  breaks_big = margin + optimal_gain(x, labels, w, "linf", big) > 0
  assert 0 < breaks_small.sum() < breaks_big.sum() < len(x)
  first = APGD("linf", small, "ce", num_steps=10)
  second = Recording(MultiTargeted("linf", big, num_steps=10, num_restarts=1, num_targets=1))
  model_fn = lambda t: model(t, training=False)
  out = cascade.run_cascade([first, second], model_fn, x, labels, batch_size=8, seed=0)

  np.testing.assert_array_equal(out["clean_correct"], np.ones(len(x), bool))
  np.testing.assert_array_equal(out["robust_after"][0], ~breaks_small)
  np.testing.assert_array_equal(out["robust_after"][1], ~breaks_big)
  np.testing.assert_array_equal(out["robust"], ~breaks_big)
  assert out["attacked"] == [len(x), int((~breaks_small).sum())]
  # The second stage saw exactly the survivors of the first, unpadded (no XLA).
  seen = np.concatenate(second.seen)
  survivors = x[~breaks_small]
  assert len(seen) == len(survivors)
  np.testing.assert_array_equal(seen, survivors)
  # Points broken by the first stage keep its adversarial examples (inside its small ball).
  dist = np.abs(out["x_adv"] - x).reshape(len(x), -1).max(1)
  assert np.all(dist[breaks_small] <= small + 1e-6)
  assert np.all(dist[breaks_big & ~breaks_small] > small)
  assert losses.misclassified(model(out["x_adv"]), labels).numpy().tolist() == (
      breaks_big.tolist())


def test_cascade_never_above_a_single_stage():
  model, x, labels, _, _ = _setup()
  model_fn = lambda t: model(t, training=False)
  stages = [APGD("linf", 0.004, "dlr", num_steps=10),
            MultiTargeted("linf", 0.004, num_steps=10, num_restarts=1, num_targets=1)]
  both = cascade.run_cascade(stages, model_fn, x, labels, 16, seed=1)["robust"].mean()
  for stage in stages:
    alone = cascade.run_cascade([stage], model_fn, x, labels, 16, seed=1)["robust"].mean()
    assert both <= alone


def test_cascade_is_deterministic_per_seed():
  model = _mlp()
  x = np.random.RandomState(0).uniform(0, 1, (12, 4, 4, 3)).astype(np.float32)
  labels = model(x).numpy().argmax(1).astype(np.int32)
  model_fn = lambda t: model(t, training=False)
  stages = suites.pgd40_suite("l2", 1.0)
  a = cascade.run_cascade(stages, model_fn, x, labels, 8, seed=3)
  b = cascade.run_cascade(stages, model_fn, x, labels, 8, seed=3)
  c = cascade.run_cascade(stages, model_fn, x, labels, 8, seed=4)
  np.testing.assert_array_equal(a["x_adv"], b["x_adv"])
  np.testing.assert_array_equal(a["robust"], b["robust"])
  broken = ~a["robust"]
  assert broken.any()
  assert not np.array_equal(a["x_adv"][broken], c["x_adv"][broken])


@pytest.mark.parametrize("strategy", [tf.distribute.get_strategy,
                                      lambda: tf.distribute.OneDeviceStrategy("/cpu:0")])
def test_distributed_cascade_matches_the_closed_form(strategy):
  model, x, labels, w, margin = _setup()
  eps = 0.004
  breakable = margin + optimal_gain(x, labels, w, "linf", eps) > 0
  stages = [APGD("linf", eps, "ce", num_steps=10)]
  out = cascade.run_cascade(stages, lambda t: model(t, training=False), x, labels, 8, seed=0,
                            strategy=strategy())
  np.testing.assert_array_equal(out["robust"], ~breakable)


def test_suites():
  names = [s.name for s in suites.get_suite("aa+mt", "linf", 8 / 255)]
  assert names == ["apgd-ce", "apgd-dlr", "multitargeted"]
  aa = suites.get_suite("autoattack", "l2", 0.5)
  assert [s.name for s in aa] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert aa[0].num_restarts == 1 and aa[1].num_target_classes == 9 and (
      aa[3].num_queries == 5000)
  mt = suites.get_suite("aa+mt", "linf", 8 / 255)
  assert [mt[0].num_restarts, mt[0].num_steps, mt[2].num_restarts, mt[2].num_steps] == [
      5, 100, 10, 200]
  with pytest.raises(ConfigError, match="Unknown suite 'aa'"):
    suites.get_suite("aa", "linf", 8 / 255)


def test_suite_parameters_come_from_gin():
  try:
    gin.parse_config(["aa_mt_suite.mt_restarts = 3", "aa_mt_suite.apgd_steps = 7"])
    stages = suites.get_suite("aa+mt", "linf", 8 / 255)
    assert stages[2].num_restarts == 3 and stages[0].num_steps == 7
  finally:
    gin.clear_config()


def test_stage_cost_is_proportional_to_the_points_attacked():
  """Without XLA nothing is padded: a stage over k points evaluates the model on k * const
  rows, whatever the batch size (the padded cascade ran every batch at full size)."""
  import tensorflow as tf
  from rgd.evaluation import cascade as cascade_lib
  rng = np.random.RandomState(0)
  weights = rng.normal(size=(8 * 8 * 3, 3)).astype(np.float32)
  rows = tf.Variable(0, dtype=tf.int64)

  def model_fn(x):
    rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
    return tf.reshape(x, [tf.shape(x)[0], -1]) @ weights

  images = rng.uniform(size=(12, 8, 8, 3)).astype(np.float32)
  predicted = (images.reshape(12, -1) @ weights).argmax(1)
  stage = suites.pgd40_suite("linf", 1e-4)   # too small to fool: every point stays
  counts = {}
  for k in (3, 6):
    labels = np.where(np.arange(12) < k, predicted, (predicted + 1) % 3)
    rows.assign(0)
    out = cascade_lib.run_cascade(stage, model_fn, images, labels, batch_size=16)
    assert out["attacked"] == [k] and out["robust"].sum() == k
    counts[k] = int(rows.numpy()) - 12            # minus the clean predictions
  assert counts[6] == 2 * counts[3] > 0
  assert cascade_lib.padded_size(3, 16, jit_compile=True) == 4
  assert cascade_lib.padded_size(9, 16, jit_compile=True) == 16
  assert cascade_lib.padded_size(9, 500, jit_compile=False) == 9


def test_a_conv_network_never_sees_an_empty_batch():
  """oneDNN's convolution (on by default, rgd/__init__.py) returns its input unchanged for an
  empty batch, so a stage with nothing left to attack must not call the network at all. Every
  point here is misclassified already: the whole AA+MT cascade runs only the clean pass."""
  from rgd import models  # pylint: disable=g-import-not-at-top
  net = models.get_model("tiny_cnn", width=4)
  shapes = []

  def model_fn(x):
    shapes.append(int(x.shape[0]) if x.shape[0] is not None else None)
    return net(x, training=False)
  x = np.random.RandomState(0).uniform(size=(6, 32, 32, 3)).astype(np.float32)
  wrong = (np.argmax(net(x).numpy(), 1) + 1) % 10
  res = cascade.run_cascade(suites.get_suite("aa+mt", "linf", 8 / 255), model_fn, x, wrong,
                            batch_size=4)
  assert not res["clean_correct"].any() and not res["robust"].any()
  assert res["attacked"] == [0, 0, 0]
  assert 0 not in shapes
