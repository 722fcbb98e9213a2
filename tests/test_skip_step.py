"""nan_policy: a step with a non-finite loss changes no weight, optimizer
slot, BN statistic or weight average, only advances the step counter; the next finite step is
then exactly the one an uninterrupted run takes at that step number."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rgd import errors, models
from rgd.runtime import nan_policy, strategy as strategy_lib
from rgd.runtime import weight_average
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer, make_distributed_step


def _setup(strategy, skip=True):
  keras.utils.set_random_seed(0)
  with strategy.scope():
    net = models.get_model("tiny_cnn", width=4)
    avg = models.get_model("tiny_cnn", width=4)
    avg.set_weights(net.get_weights())
    trainer = RobustTrainer(net, objectives.Objective(attack_steps=1), global_batch_size=8,
                            skip_nonfinite=skip)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.995)
  step = make_distributed_step(strategy, trainer, ema)
  trainer.avg_network = avg  # for _state
  return trainer, lambda b: step(strategy_lib.distribute_stacked(strategy, b))


def _state(trainer):
  """Every variable a step may change: network (with BN statistics), average, optimizer."""
  return [v.numpy().copy() for v in trainer.network.weights + trainer.avg_network.weights +
          trainer.optimizer.variables]


def _batch(i, nan=False):
  image = tf.random.stateless_uniform([1, 8, 32, 32, 3], [i, 0])
  if nan:
    image = tf.tensor_scatter_nd_update(image, [[0, 3, 5, 5, 1]], [np.nan])
  return {"image": image, "label": tf.one_hot(tf.range(8)[None] % 10, 10)}


@pytest.mark.parametrize("mirrored", [False, True])  # in-replica cond / cross-replica merge_call
def test_non_finite_step_is_skipped_exactly(mirrored):
  strategy = (tf.distribute.MirroredStrategy(["/cpu:0"]) if mirrored
              else tf.distribute.get_strategy())
  trainer, step = _setup(strategy)
  assert float(step(_batch(1))["skipped"]) == 0.0
  before = _state(trainer)
  logs = step(_batch(2, nan=True))
  assert float(logs["skipped"]) == 1.0 and not np.isfinite(float(logs["total"]))
  after = _state(trainer)
  assert int(trainer.optimizer.iterations.numpy()) == 2
  assert sum(b.size for b in before) > 1000
  for b, a, v in zip(before, after, trainer.network.weights + trainer.avg_network.weights +
                     trainer.optimizer.variables):
    if v is trainer.optimizer.iterations:
      continue
    np.testing.assert_array_equal(a, b, err_msg=v.path)
  assert float(step(_batch(3))["skipped"]) == 0.0
  final = _state(trainer)
  assert not all(np.array_equal(a, b) for a, b in zip(final, after))
  if mirrored:
    return  # the reference below depends on the policy, not on the strategy

  # Reference: the same run where step 2 never happened but its number was used up.
  reference, ref_step = _setup(strategy)
  ref_step(_batch(1))
  reference.optimizer.iterations.assign_add(1)
  ref_step(_batch(3))
  for a, b in zip(final, _state(reference)):
    np.testing.assert_array_equal(a, b)


def test_policy_counts_cumulatively_and_stops_after_consecutive_skips():
  """NanPolicy by hand: skipped steps count across the run (and a resume: the count is a
  checkpointed variable), a finite step resets the run of skips, the cap raises."""
  policy = nan_policy.NanPolicy("skip_step", max_consecutive_skips=3)
  ok, bad = {"skipped": 0.0, "total": 1.0, "count": 8.0}, {"skipped": 1.0, "total": np.nan}
  assert policy.after_step(ok, 1, None) == {"total": 1.0, "count": 8.0}
  assert policy.after_step(bad, 2, None) == {} and policy.after_step(bad, 3, None) == {}
  assert policy.after_step(ok, 4, None) and policy.consecutive == 0
  assert policy.skipped_total == 2
  restored = nan_policy.NanPolicy("skip_step", max_consecutive_skips=3)
  ckpt = tf.train.Checkpoint(**restored.checkpoint_objects())
  ckpt.read(tf.train.Checkpoint(**policy.checkpoint_objects()).write("/tmp/.rgd_policy_test"))
  assert restored.skipped_total == 2
  policy.after_step(bad, 5, None)
  policy.after_step(bad, 6, None)
  with pytest.raises(errors.TooManySkippedSteps, match=r"step 7: 3 consecutive steps .* "
                     r"Last good checkpoint: ckpt-4"):
    policy.after_step(bad, 7, "ckpt-4")
  stop = nan_policy.NanPolicy("stop")
  assert stop.checkpoint_objects() == {}
  with pytest.raises(errors.NonFiniteError, match="step 2: non-finite gradients"):
    stop.after_step({"nonfinite_gradients": 1.0, "total": 1.0}, 2, None)
  with pytest.raises(errors.ConfigError, match="nan_policy='skip'"):
    nan_policy.NanPolicy("skip")


def _run(tmp_path, bindings, name="run"):
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import write_npz_dataset  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  data_dir = write_npz_dataset(str(tmp_path / "data"))
  model_dir = str(tmp_path / name)
  cmd = [sys.executable, "-m", "rgd.train", "--gin_file=gin/debug.gin",
         f"--model_dir={model_dir}", f"--gin_bindings=DATASET='npz:{data_dir}'"]
  result = subprocess.run(cmd + [f"--gin_bindings={b}" for b in bindings], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  return result, model_dir


def test_run_that_is_nan_at_every_step_exits_3(tmp_path):
  """beta = inf makes every TRADES loss non-finite: under 'skip_step' every step is skipped, and
  the entry point stops with exit status 3 at the cap instead of finishing with exit 0."""
  result, model_dir = _run(tmp_path, [
      "Objective.beta=1e400", "train_and_evaluate.nan_policy='skip_step'",
      "train_and_evaluate.max_consecutive_skips=3", "train_and_evaluate.num_steps=6",
      "train_and_evaluate.eval_every=0", "train_and_evaluate.image_summary_every=0",
      "Objective.attack_steps=1"])
  assert result.returncode == 3, result.stderr[-3000:]
  assert "step 3: 3 consecutive steps had a non-finite loss" in result.stderr
  import os  # pylint: disable=g-import-not-at-top
  assert not os.path.exists(os.path.join(model_dir, "last.keras"))


def test_training_loop_counts_skipped_steps_in_tensorboard(tmp_path, monkeypatch):
  """The training loop (in process) with a diverging learning rate and nan_policy='skip_step':
  it finishes, warns once per skipped step, logs the cumulative count as `skipped_steps`, and
  exports finite weights."""
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from conftest import write_npz_dataset  # pylint: disable=g-import-not-at-top
  from rgd import cli  # pylint: disable=g-import-not-at-top
  from rgd.training import loop  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  data_dir = write_npz_dataset(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  warned = []
  monkeypatch.setattr(loop.logging, "warning",
                      lambda msg, *a: warned.append(a[0]) if "update skipped" in msg else None)
  monkeypatch.chdir(root)
  gin.clear_config()
  try:
    cli.parse_gin(["gin/debug.gin"], [
        f"DATASET='npz:{data_dir}'", "learning_rate_schedule.base_learning_rate=1e12",
        "train_and_evaluate.nan_policy='skip_step'", "train_and_evaluate.num_steps=4",
        "train_and_evaluate.eval_every=0", "train_and_evaluate.image_summary_every=0",
        "train_and_evaluate.log_every=1", "Objective.attack_steps=1"])
    loop.train_and_evaluate(model_dir, tf.distribute.get_strategy())
  finally:
    gin.clear_config()
  assert warned, "lr 1e12 should diverge within 4 steps"
  logged = {}
  for f in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(f):
      for v in event.summary.value:
        if v.tag == "skipped_steps":
          logged[event.step] = float(tf.make_ndarray(v.tensor))
  assert logged == {s: float(sum(w <= s for w in warned)) for s in range(1, 5)}
  model = keras.saving.load_model(os.path.join(model_dir, "last.keras"))
  assert all(np.isfinite(w).all() for w in model.get_weights())
