"""Evaluation faults: NaN/Inf or probability outputs are reported before any attack
runs, and an evaluation interrupted after a stage resumes from the stages it saved, with the
same report as an uninterrupted one."""
import json
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd import errors
from rgd.evaluation import stage_state
from rgd import models
from rgd.evaluation import adversarial
from rgd.runtime import faults
from rgd.evaluation import cascade, checks
from rgd.attacks import suites

SIZE = 8
SUITE = ["aa_mt_suite.apgd_steps=3", "aa_mt_suite.apgd_restarts=1"]


@pytest.fixture(scope="module")
def model_and_data():
  keras.utils.set_random_seed(0)
  images, labels = make_images(24, size=SIZE, seed=5)
  model = models.get_model("tiny_cnn", width=4, input_shape=(SIZE, SIZE, 3))
  model.compile(keras.optimizers.SGD(0.2), keras.losses.SparseCategoricalCrossentropy(True))
  model.fit(images.astype(np.float32) / 255, labels, batch_size=8, epochs=3, verbose=0)
  return model, images, labels


@pytest.fixture
def small_suite(monkeypatch):
  """AA+MT's first two stages, a few steps each: two stages are what resuming needs."""
  gin.parse_config(SUITE)
  monkeypatch.setitem(suites.SUITES, "aa+mt", lambda norm, eps: suites.aa_mt_suite(
      norm, eps)[:2])
  yield
  gin.clear_config()


@pytest.fixture
def attacked(monkeypatch):
  """The names of the stages the cascade compiles (each stage compiles once when it runs)."""
  names = []
  compile_run = cascade.compile_run

  def spy(attack, model_fn, jit_compile=False):
    names.append(attack.name)
    return compile_run(attack, model_fn, jit_compile)
  monkeypatch.setattr(cascade, "compile_run", spy)
  return names


class Interrupted(Exception):
  pass


def _evaluate(model, images, labels, out, seed=0):
  return adversarial.evaluate_model(model, images, labels, "aa+mt", "linf", 8 / 255,
                                 batch_size=8, seed=seed, output_dir=str(out), source="m.keras")


def _arrays(out):
  name = adversarial.report_name("aa+mt", "linf", 8 / 255)
  with np.load(os.path.join(out, name + ".npz"), allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def test_interrupted_evaluation_resumes_without_rerunning_finished_stages(
    model_and_data, small_suite, attacked, monkeypatch, tmp_path):
  model, images, labels = model_and_data
  full = _evaluate(model, images, labels, tmp_path / "full")
  assert attacked == ["apgd-ce", "apgd-dlr"]
  assert full["restored_stages"] == []
  assert 0 < full["robust_accuracy"] < full["clean_accuracy"]  # the stages do something

  # Killed right after stage 1's state is saved (RGD_KILL_AT=eval_stage:0 in a process).
  def kill_point(point):
    if point == "eval_stage:0":
      raise Interrupted(point)
  monkeypatch.setattr(faults, "kill_point", kill_point)
  attacked.clear()
  cut = tmp_path / "cut"
  with pytest.raises(Interrupted):
    _evaluate(model, images, labels, cut)
  state = str(cut / (adversarial.report_name("aa+mt", "linf", 8 / 255) + ".state.npz"))
  assert os.path.exists(state) and not [f for f in os.listdir(cut) if f.endswith(".json")]

  # Other settings: refused before any attack, naming the difference.
  attacked.clear()
  with pytest.raises(errors.StateMismatchError, match="seed: was 0, now 1"):
    _evaluate(model, images, labels, cut, seed=1)
  assert attacked == []

  monkeypatch.setattr(faults, "kill_point", lambda point: None)
  resumed = _evaluate(model, images, labels, cut)
  assert attacked == ["apgd-dlr"]  # apgd-ce is not run again
  assert resumed["restored_stages"] == ["apgd-ce"]
  assert not os.path.exists(state)  # done: the report holds it all
  for key in ("clean_accuracy", "robust_accuracy", "num_examples"):
    assert resumed[key] == full[key], key
  for a, b in zip(full["stages"], resumed["stages"]):
    for key in ("name", "robust_accuracy", "attacked", "point_runs"):
      assert a[key] == b[key], key
  a, b = _arrays(tmp_path / "full"), _arrays(cut)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  saved = json.load(open(cut / (adversarial.report_name("aa+mt", "linf", 8 / 255) + ".json")))
  assert saved["restored_stages"] == ["apgd-ce"]


class Outputs:
  """A model returning fixed-style outputs for any input."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, x, training=False):
    return self.fn(tf.convert_to_tensor(x))


def test_nan_logits_fail_before_any_attack(model_and_data, attacked, tmp_path):
  _, images, labels = model_and_data

  def nan_row_2(x):
    logits = tf.reshape(tf.reduce_mean(x, [1, 2, 3]), [-1, 1]) * tf.ones([1, 10])
    return tf.where(tf.range(tf.shape(x)[0])[:, None] == 2, np.inf, logits)
  with pytest.raises(errors.NonFiniteLogitsError,
                     match=r"m.keras: the model returns NaN/Inf logits for 1 of the 8 first "
                     r"images \(first: index 2\)"):
    _evaluate(Outputs(nan_row_2), images, labels, tmp_path)
  assert attacked == [] and not os.listdir(tmp_path)
  # NaN only past the first batch: found by the clean pass over all images, still before attacks.
  late = lambda x: tf.where(tf.reduce_mean(x, [1, 2, 3], keepdims=True)[:, :, 0, 0] > -1,
                            tf.ones([1, 10]), 0.0) * np.where(
                                np.arange(len(images)) == 20, np.nan, 1.0)[:, None]
  with pytest.raises(errors.NonFiniteLogitsError, match=r"for 1 of 24 clean images \(first: "
                     "index 20\\)"):
    cascade.run_cascade(suites.get_suite("pgd40", "linf", 0.03), Outputs(late),
                        images.astype(np.float32) / 255, labels, batch_size=24)
  assert attacked == []


def test_probabilities_warn_before_any_attack(model_and_data, small_suite, monkeypatch):
  model, images, labels = model_and_data
  events = []
  monkeypatch.setattr(adversarial.logging, "warning", lambda msg, *a: events.append(msg % a))
  run_cascade = cascade.run_cascade
  monkeypatch.setattr(cascade, "run_cascade",
                      lambda *a, **k: events.append("attacks") or run_cascade(*a, **k))
  probs = Outputs(lambda x: tf.nn.softmax(model(x, training=False)))
  report = adversarial.evaluate_model(probs, images[:8], labels[:8], "pgd40", "linf", 8 / 255,
                                   batch_size=8)
  assert "look like probabilities" in events[0] and events[1] == "attacks"
  assert any("probabilities" in w for w in report["warnings"])
