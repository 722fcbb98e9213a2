"""`python -m rgd.evaluate` end to end on a tiny trained model, its bad-input errors, and the
FLOP counter of the benchmarks."""
import json
import os

import keras
import numpy as np
import pytest

from rgd import errors
from rgd.data import datasets
from rgd import models
from rgd.evaluation import adversarial, target
from rgd.bench import flops

from conftest import run_main, write_npz_dataset

SIZE = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(model_dir, dataset) with DIR/model.keras trained for one epoch on an 8x8 npz set."""
  root = tmp_path_factory.mktemp("eval")
  folder = write_npz_dataset(str(root / "data"), num_train=64, num_test=24, size=SIZE)
  images, labels = datasets.load_split(f"npz:{folder}", "train_full")
  keras.utils.set_random_seed(0)
  model = models.get_model("tiny_cnn", width=8, input_shape=(SIZE, SIZE, 3))
  model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
  model.fit(images.astype(np.float32) / 255, labels, batch_size=16, epochs=2, verbose=0)
  model_dir = root / "run"
  os.makedirs(model_dir)
  model.save(model_dir / "model.keras")
  (model_dir / "model.json").write_text(json.dumps(
      {"step": 8, "class_names": [f"kind {i}" for i in range(10)]}))
  return str(model_dir), f"npz:{folder}"


def test_entry_point_writes_the_report(trained, capfd):
  """rgd.evaluate's main in this process (the real process starts in test_exit_statuses)."""
  from rgd import evaluate  # pylint: disable=g-import-not-at-top
  model_dir, dataset = trained
  capfd.readouterr()
  code = run_main(evaluate.main, "rgd.evaluate", [
      "rgd.evaluate", f"--model_dir={model_dir}", f"--dataset={dataset}", "--suite=aa+mt",
      "--norm=linf", "--eps=8/255", "--num_examples=12", "--batch_size=8", "--seed=1",
      "--gin_bindings=aa_mt_suite.apgd_steps=4", "--gin_bindings=aa_mt_suite.apgd_restarts=1",
      "--gin_bindings=aa_mt_suite.mt_steps=4", "--gin_bindings=aa_mt_suite.mt_restarts=2"])
  proc = capfd.readouterr()
  assert code == 0, proc.err[-3000:]
  out = os.path.join(model_dir, "eval")
  name = adversarial.report_name("aa+mt", "linf", 8 / 255)
  with open(os.path.join(out, name + ".json")) as f:
    report = json.load(f)
  with np.load(os.path.join(out, name + ".npz"), allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  assert report["num_examples"] == 12 and report["eps"] == pytest.approx(8 / 255)
  assert report["settings"]["checkpoint_step"] == 8
  assert report["settings"]["dataset"] == dataset
  assert "aa_mt_suite.mt_restarts = 2" in report["settings"]["gin"]
  assert set(report["versions"]) >= {"rgd", "tensorflow", "keras", "numpy", "python"}
  assert [s["name"] for s in report["stages"]] == ["apgd-ce", "apgd-dlr", "multitargeted"]
  # The numbers agree with the per-example flags, and accuracy never goes up.
  assert report["clean_accuracy"] == pytest.approx(arrays["clean_correct"].mean())
  assert report["robust_accuracy"] == pytest.approx(arrays["robust"].mean())
  accs = [report["clean_accuracy"]] + [s["robust_accuracy"] for s in report["stages"]]
  assert accs == sorted(accs, reverse=True)
  np.testing.assert_allclose([s["robust_accuracy"] for s in report["stages"]],
                             arrays["robust_after"].mean(1))
  assert report["stages"][0]["attacked"] == int(arrays["clean_correct"].sum())
  assert report["stages"][0]["seconds_per_attacked_point"] == pytest.approx(
      report["stages"][0]["seconds"] / max(report["stages"][0]["attacked"], 1))
  # Adversarial examples: in the ball and the box, misclassified exactly where not robust.
  images, labels = datasets.load_split(dataset, "test")
  x = images[:12].astype(np.float32) / 255
  np.testing.assert_array_equal(arrays["label"], labels[:12])
  assert np.abs(arrays["x_adv"] - x).max() <= 8 / 255 + 1e-6
  model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
  pred = model(arrays["x_adv"]).numpy().argmax(1)
  np.testing.assert_array_equal(pred == labels[:12], arrays["robust"])
  assert os.listdir(os.path.join(out, "tensorboard"))
  assert "ETA" in proc.err and "robust" in proc.out
  # Per class, named by model.json: each class's fractions of the per-example flags.
  for row in report["per_class"]:
    mask = arrays["label"] == row["label"]
    assert row["name"] == f"kind {row['label']}" and row["examples"] == mask.sum()
    assert row["clean_accuracy"] == pytest.approx(arrays["clean_correct"][mask].mean())
    assert row["robust_accuracy"] == pytest.approx(arrays["robust"][mask].mean())
  assert sorted(r["label"] for r in report["per_class"]) == sorted(set(labels[:12]))
  assert "weakest classes (robust): kind " in proc.out


def test_parse_eps():
  assert target.parse_eps("8/255") == 8 / 255
  assert target.parse_eps("0.5") == 0.5
  for bad in ("0", "1.5", "-8/255", "8/0", "eight"):
    with pytest.raises(ValueError, match="--eps"):
      target.parse_eps(bad)


def _tiny_inputs(n=4):
  return np.zeros((n, SIZE, SIZE, 3), np.uint8), np.arange(n) % 3


def test_unknown_suite_and_bad_eps():
  model = models.get_model("tiny_cnn", width=4, input_shape=(SIZE, SIZE, 3))
  images, labels = _tiny_inputs()
  with pytest.raises(ValueError, match="Unknown suite 'aa-mt'"):
    adversarial.evaluate_model(model, images, labels, suite="aa-mt")
  with pytest.raises(ValueError, match=r"--eps='2' must be in \(0, 1\]"):
    adversarial.evaluate_model(model, images, labels, suite="pgd40", eps="2")
  with pytest.raises(ValueError, match="--norm"):
    adversarial.evaluate_model(model, images, labels, suite="pgd40", norm="l1")


@pytest.mark.parametrize("make_output", [
    lambda x: keras.layers.Dense(1)(keras.layers.Flatten()(x)),             # one logit
    lambda x: keras.layers.Conv2D(10, 1)(x),                                # [B, H, W, K]
    lambda x: keras.layers.Dense(2)(keras.layers.Flatten()(x)),             # too few classes
])
def test_model_with_wrong_output_shape(make_output):
  inputs = keras.Input((SIZE, SIZE, 3))
  model = keras.Model(inputs, make_output(inputs))
  images, labels = _tiny_inputs()
  with pytest.raises(ValueError, match="bad.keras: the model must return logits of shape"):
    adversarial.evaluate_model(model, images, labels, suite="pgd40", source="bad.keras")


def test_empty_dataset(tmp_path):
  folder = tmp_path / "empty"
  os.makedirs(folder)
  np.savez(folder / "test.npz", image=np.zeros((0, SIZE, SIZE, 3), np.uint8),
           label=np.zeros((0,), np.int64))
  with pytest.raises(errors.DataError, match="test.npz: no images"):
    datasets.load_split(f"npz:{folder}", "test")
  model = models.get_model("tiny_cnn", width=4, input_shape=(SIZE, SIZE, 3))
  with pytest.raises(ValueError, match="the dataset is empty"):
    adversarial.evaluate_model(model, np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros(0),
                            suite="pgd40")


def test_missing_model(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"--model_dir=.*: model file .* is missing"):
    target.load_model(model_dir=str(tmp_path))
  with pytest.raises(errors.ConfigError, match="--model_dir=.*nope: the directory is missing"):
    target.load_model(model_dir=str(tmp_path / "nope"))
  with pytest.raises(errors.ConfigError, match="exactly one"):
    target.load_model()


def test_forward_flops_of_tiny_cnn_by_hand():
  model = models.get_model("tiny_cnn", width=8)
  # 3x3 convs 3->8 (32x32), 8->16 (16x16), 16->32 (8x8), dense 32->10; 2 FLOPs per MAC.
  expected = 2 * (32 * 32 * 8 * 9 * 3 + 16 * 16 * 16 * 9 * 8 + 8 * 8 * 32 * 9 * 16 + 32 * 10)
  assert flops.forward_flops(model, (32, 32, 3)) == expected
  # Another input size re-derives the shapes.
  expected16 = 2 * (16 * 16 * 8 * 27 + 8 * 8 * 16 * 72 + 4 * 4 * 32 * 144 + 32 * 10)
  assert flops.forward_flops(model, (16, 16, 3)) == expected16


def test_forward_flops_counts_shared_layers_and_nested_models():
  inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7)])
  shared = keras.layers.Dense(7)
  inputs = keras.Input((5,))
  x = shared(shared(inner(inputs)))
  model = keras.Model(inputs, keras.layers.Dense(3)(x))
  assert flops.forward_flops(model, (5,)) == 2 * (5 * 7 + 7 * 7 + 7 * 7 + 7 * 3)
