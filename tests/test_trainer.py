"""The distributed TRADES step with XLA and with bf16 mixed precision."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import models
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer, make_distributed_step


@pytest.mark.parametrize("precision,jit", [("mixed_bfloat16", False), ("float32", True)])
def test_step_runs_and_updates_with_bf16_and_xla(precision, jit):
  keras.mixed_precision.set_global_policy(precision)
  try:
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    net = models.get_model("tiny_cnn", width=4)
    avg = models.get_model("tiny_cnn", width=4)
    avg.set_weights(net.get_weights())
    trainer = RobustTrainer(net, objectives.Objective(attack_steps=2), global_batch_size=8)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.995)
    step = make_distributed_step(strategy, trainer, ema, jit_compile=jit)
    batch = {"image": tf.random.stateless_uniform([1, 8, 32, 32, 3], [0, 0]),
             "label": tf.one_hot(tf.range(8)[None] % 10, 10)}
    before = [w.numpy().copy() for w in net.trainable_weights]
    expected_avg = [w.numpy().copy() for w in avg.trainable_weights]
    dist = strategy_lib.distribute_stacked(strategy, batch)
    for t in range(2):  # the head starts at zero: only from step 2 on does every weight move
      logs = step(dist)
      d = min(0.995, (1 + t) / (10 + t))
      expected_avg = [d * a + (1 - d) * w.numpy()
                      for a, w in zip(expected_avg, net.trainable_weights)]
    assert np.isfinite(float(logs["total"])) and float(logs["count"]) == 8
    assert all(w.dtype == "float32" for w in net.trainable_weights)
    for b, w in zip(before, net.trainable_weights):
      assert not np.array_equal(b, w.numpy()), w.path
    for e, a in zip(expected_avg, avg.trainable_weights):
      np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6)
  finally:
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("batch_stats_attack", [True, False])
def test_only_the_adversarial_pass_updates_bn_statistics(batch_stats_attack):
  """DeepMind's mode: after a TRADES step the BN moving averages equal one training-mode pass
  over x_adv from where they were, although the attack and the clean term ran with batch
  statistics. Zhang et al.'s mode: the clean pass and then the adversarial pass update them."""
  keras.utils.set_random_seed(1)
  net = models.get_model("tiny_cnn", width=4)
  obj = objectives.Objective(attack_steps=2, batch_stats_attack=batch_stats_attack)
  trainer = RobustTrainer(net, obj, global_batch_size=8)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1))
  trainer.optimizer.build(net.trainable_variables)
  x = tf.random.stateless_uniform([8, 32, 32, 3], [2, 3])
  y = tf.one_hot(tf.range(8) % 10, 10)
  stats = [v for v in net.non_trainable_weights if "moving" in v.path]
  start = [v.numpy().copy() for v in stats]
  # The x_adv the step will build (same seed: step 0).
  attack_fn = lambda z: net(z, training=batch_stats_attack)
  seed, init_slice = trainer.attack_start(8)
  x_adv = obj.adversarial_examples(attack_fn, x, y, seed, init_slice)
  for v, s in zip(stats, start):
    v.assign(s)
  if not batch_stats_attack:
    net(x, training=True)
  net(x_adv, training=True)
  expected = [v.numpy().copy() for v in stats]
  for v, s in zip(stats, start):
    v.assign(s)
  trainer.train_step({"image": x, "label": y})
  for v, e, s in zip(stats, expected, start):
    assert not np.allclose(e, s)
    np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7, err_msg=v.path)


class _Counting(RobustTrainer):
  """Counts the network passes of a step (each of network_fns' functions)."""
  calls = 0

  def network_fns(self):
    def counted(fn):
      def call(x):
        type(self).calls += 1
        return fn(x)
      return call
    return tuple(counted(fn) for fn in super().network_fns())


class _NoSharing(objectives.Trades):
  def shares_clean_pass(self):
    return False


@pytest.mark.parametrize("batch_stats_attack", [True, False])
def test_deepmind_mode_reuses_the_clean_pass_as_attack_target(batch_stats_attack):
  """In DeepMind's BN mode the attack's KL target f(x) is the clean pass of the loss: a
  TRADES-K step runs K + 2 network passes, not K + 3, and the update is exactly the one with a
  separate target pass. Zhang's mode (eval-mode target, training-mode clean term) keeps both."""
  results = {}
  for cls in (objectives.Trades, _NoSharing):
    keras.utils.set_random_seed(3)
    net = models.get_model("tiny_cnn", width=4)
    trainer = _Counting(net, cls(attack_steps=3, batch_stats_attack=batch_stats_attack),
                        global_batch_size=8)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    trainer.optimizer.build(net.trainable_variables)
    x = tf.random.stateless_uniform([8, 32, 32, 3], [4, 5])
    y = tf.one_hot(tf.range(8) % 10, 10)
    _Counting.calls = 0
    for _ in range(2):  # the head starts at zero: step 2 moves every weight
      logs = trainer.train_step({"image": x, "label": y})
    results[cls] = (_Counting.calls, [w.numpy() for w in net.weights], float(logs["total"]))
  shared, separate = results[objectives.Trades], results[_NoSharing]
  assert separate[0] == 2 * (3 + 3)
  assert shared[0] == (2 * (3 + 2) if batch_stats_attack else separate[0])
  assert shared[2] == separate[2]
  for a, b in zip(shared[1], separate[1]):
    np.testing.assert_array_equal(a, b)
