"""Attacking only what is left: every stage and every restart of a cascade runs on the points
still robust, its model evaluations are proportional to them, and a point's result does not
depend on which other points are attacked (per-example seeds, rgd/attacks/common.py)."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.evaluation import cascade
from rgd.attacks import common, initializers, optimizers, pgd, projections, protocol
from rgd.attacks.apgd import APGD
from rgd.attacks.square import Square

from test_attacks_apgd import _mlp
from test_attacks_linear import optimal_gain, separated_problem


def _problem(radii=(0.003, 0.006)):
  return separated_problem(24, radii)


class Counting:
  """model_fn that counts the rows it evaluates (a variable: counts inside tf.function too)."""

  def __init__(self, model):
    self.model, self.rows = model, tf.Variable(0, dtype=tf.int64)

  def __call__(self, x):
    self.rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
    return self.model(x, training=False)


def test_model_evaluations_are_proportional_to_the_points_attacked():
  model, x, labels, w, margin = _problem()
  small, big = 0.003, 0.006
  breaks_small = margin + optimal_gain(x, labels, w, "linf", small) > 0
  breaks_big = margin + optimal_gain(x, labels, w, "linf", big) > 0
  assert 0 < breaks_small.sum() < breaks_big.sum() < len(x)
  steps, restarts = 4, 3
  stages = [APGD("linf", small, "ce", steps, 1), APGD("linf", big, "ce", steps, restarts)]
  counting = Counting(model)
  marks = {}

  def on_batch(s, name, done, total):
    if done in (0, total):
      marks[(s, done == total)] = int(counting.rows.numpy())

  out = cascade.run_cascade(stages, counting, x, labels, batch_size=8, seed=0,
                            on_batch=on_batch)
  np.testing.assert_array_equal(out["robust"], ~breaks_big)
  rows = [marks[(s, True)] - marks[(s, False)] for s in range(2)]
  # Per point and run: the start and `steps` iterates (APGD.run), and the cascade's check.
  per_point_run = steps + 2
  survivors = int((~breaks_small).sum())
  assert out["attacked"] == [len(x), survivors]
  # APGD breaks every breakable point of a linear model in its first run (test_attacks_linear),
  # so restarts 2 and 3 attack only the unbreakable points.
  unbreakable = int((~breaks_big).sum())
  assert out["point_runs"] == [len(x), survivors + (restarts - 1) * unbreakable]
  assert rows == [p * per_point_run for p in out["point_runs"]]
  assert rows[1] < restarts * survivors * per_point_run
  assert out["bucket_sizes"] == []      # no padding without XLA


def test_restarts_inside_an_attack_run_only_on_points_not_yet_fooled():
  model, x, labels, w, margin = _problem()
  eps, steps, restarts = 0.006, 4, 3
  breaks = margin + optimal_gain(x, labels, w, "linf", eps) > 0
  counting = Counting(model)
  attack = APGD("linf", eps, "ce", steps, restarts)
  x_adv = attack(counting, tf.constant(x), tf.constant(labels), tf.constant([1, 2])).numpy()
  # The clean check, then per run and attacked point the start and `steps` iterates.
  expected = len(x) + (len(x) + (restarts - 1) * int((~breaks).sum())) * (steps + 1)
  assert int(counting.rows.numpy()) == expected
  fooled = model(x_adv).numpy().argmax(1) != labels
  np.testing.assert_array_equal(fooled, breaks)


@pytest.mark.parametrize("make", [
    lambda: APGD("l2", 0.2, "dlr", num_steps=5, num_restarts=3),
    lambda: Square("linf", 0.02, num_queries=15, num_restarts=2)])
def test_subsetting_does_not_change_the_result(make):
  model = _mlp()
  x = np.random.RandomState(0).uniform(0, 1, (12, 4, 4, 3)).astype(np.float32)
  labels = model(x).numpy().argmax(1).astype(np.int32)
  model_fn = lambda t: model(t, training=False)
  attack = make()
  seeds = common.example_seeds(tf.constant([7, 8]), len(x))
  with_subset, fooled = protocol.run_until_fooled(attack, model_fn, x, labels, seeds)
  without, fooled_all = protocol.run_until_fooled(attack, model_fn, x, labels, seeds,
                                                  subset=False)
  assert 0 < int(tf.reduce_sum(tf.cast(fooled, tf.int32))) < len(x)
  np.testing.assert_array_equal(fooled, fooled_all)
  np.testing.assert_allclose(with_subset, without, atol=1e-6)
  # A point attacked alone, or with other rows, gets the same result from the same seed.
  rows = np.array([1, 4, 9])
  part, _ = protocol.run_until_fooled(attack, model_fn, x[rows], labels[rows],
                                      tf.gather(seeds, rows))
  np.testing.assert_allclose(part, with_subset.numpy()[rows], atol=1e-6)


def test_pgd_restarts_are_per_example():
  model = _mlp()
  x = np.random.RandomState(1).uniform(0, 1, (10, 4, 4, 3)).astype(np.float32)
  labels = model(x).numpy().argmax(1).astype(np.int32)
  model_fn = lambda t: model(t, training=False)
  eps = 0.5
  attack = pgd.PGD(optimizers.SignGradient(eps / 4), 3, initializers.uniform_init("linf", eps),
                   projections.project_fn("linf", eps), norm="linf", eps=eps, num_restarts=3)
  loss_fn = lambda logits, y: -tf.gather(logits, y, batch_dims=1)
  seeds = common.example_seeds(tf.constant([3, 4]), len(x))
  full = attack(model_fn, x, labels, seeds, loss_fn=loss_fn).numpy()
  rows = np.array([0, 3, 7])
  part = attack(model_fn, x[rows], labels[rows], tf.gather(seeds, rows), loss_fn=loss_fn).numpy()
  np.testing.assert_allclose(part, full[rows], atol=1e-6)
  assert (model(full).numpy().argmax(1) != labels).any()


class Noop(protocol.Attack):
  """A stage that fools nothing."""
  name, norm, eps = "noop", "linf", 0.1

  def run(self, model_fn, r, seeds, x0, labels, loss_fn=None):
    return x0, tf.zeros(tf.shape(x0)[:1], tf.bool), tf.zeros(tf.shape(x0)[:1])


def test_cascade_stage_result_does_not_depend_on_the_points_left():
  model, x, labels, w, margin = _problem()
  model_fn = lambda t: model(t, training=False)
  small, big = 0.003, 0.006
  later = APGD("linf", big, "dlr", num_steps=4, num_restarts=2)
  cut = cascade.run_cascade([APGD("linf", small, "ce", 4), later], model_fn, x, labels, 8, 5)
  full = cascade.run_cascade([Noop(), later], model_fn, x, labels, 8, 5)
  survivors = cut["robust_after"][0]
  assert 0 < survivors.sum() < len(x)
  np.testing.assert_array_equal(cut["robust"][survivors], full["robust"][survivors])
  broken_later = survivors & ~cut["robust"]
  assert broken_later.any()
  np.testing.assert_allclose(cut["x_adv"][broken_later], full["x_adv"][broken_later],
                             atol=1e-6)


def test_xla_batches_are_padded_to_a_few_buckets(monkeypatch):
  assert cascade.bucket_sizes(500) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 500]
  assert cascade.bucket_sizes(20, multiple=3) == [3, 6, 9, 18, 21]
  shapes = []
  real = cascade.compile_run

  def recording(attack, model_fn, jit_compile=False):
    assert jit_compile
    fn = real(attack, model_fn, jit_compile=False)

    def run(r, x, y, seeds):
      shapes.append(int(x.shape[0]))
      return fn(r, x, y, seeds)
    return run

  monkeypatch.setattr(cascade, "compile_run", recording)
  model, x, labels, w, margin = _problem()
  out = cascade.run_cascade([APGD("linf", 0.006, "ce", 3, 2)], lambda t: model(t), x[:19],
                            labels[:19], batch_size=16, seed=0, jit_compile=True)
  assert out["bucket_sizes"] == [1, 2, 4, 8, 16]
  left = int(out["robust"].sum())
  # Run 1: 19 points as 16 + 3 (padded to 4); run 2: the survivors, padded to a bucket.
  assert shapes[:2] == [16, 4]
  assert shapes[2:] == ([cascade.padded_size(left, 16, True)] if left else [])
  assert 0 < left < 16
