"""`rgd.evaluate --suite=cifar10_1` (clean accuracy on CIFAR-10.1 beside the run's test split,
seed 003 Table 2) through the real entry point equals a direct computation on the same arrays,
from the release's .npy pair and from tfds (mock data, offline); `--suite=cifar10c` takes its
clean split from the run like the other suites (a run on npz:DIR evaluates offline)."""
import glob
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import run_main, write_cifar10_1_pair, write_npz_dataset
from test_cifar10c_folder import _write_folder
from rgd.evaluation import cifar10c

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK = ("import sys, tensorflow_datasets as tfds\n"
        "from absl import app\n"
        "from rgd import evaluate\n"
        "with tfds.testing.mock_data(num_examples=20):\n"
        "  app.run(evaluate.main, argv=sys.argv)\n")


def _model_dir(tmp_path, dataset, num_classes=10, seed=0):
  """A run folder as rgd.train leaves it: model.keras and model.json naming the data set."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(num_classes)])
  folder = tmp_path / "run"
  os.makedirs(folder)
  model.save(folder / "model.keras")
  (folder / "model.json").write_text(json.dumps({"dataset": dataset, "step": 5,
                                                 "objective": "trades", "eps": 8 / 255}))
  return folder, model


def _accuracy(model, images, labels):
  pred = np.argmax(model.predict(images.astype(np.float32) / 255., verbose=0), axis=1)
  return float(np.mean(pred == labels))


def _evaluate(args, mock=False, env=None):
  cmd = ([sys.executable, "-c", MOCK] if mock else [sys.executable, "-m", "rgd.evaluate"]) + args
  return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
                        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                                 **(env or {})))


def _write_npy_pair(folder, n=30, seed=1):
  return write_cifar10_1_pair(folder, n, seed)


def _scalars(folder):
  out = {}
  for f in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(f):
      for v in event.summary.value:
        if v.HasField("tensor") and v.tensor.dtype == tf.float32.as_datatype_enum:
          out[v.tag] = float(tf.make_ndarray(v.tensor))
  return out


@pytest.mark.slow
def test_suite_from_the_npy_pair_equals_direct_computation(tmp_path):
  data = write_npz_dataset(str(tmp_path / "data"), num_train=8, num_test=24)
  model_dir, model = _model_dir(tmp_path, f"npz:{data}")
  shifted = _write_npy_pair(str(tmp_path / "c101"))
  proc = _evaluate([f"--model_dir={model_dir}", "--suite=cifar10_1",
                    f"--cifar10_1_dir={tmp_path / 'c101'}", "--batch_size=7"],
                   env={"TFDS_DATA_DIR": str(tmp_path / "no_tfds")})
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(os.path.join(data, "test.npz")) as f:
    clean = _accuracy(model, f["image"], f["label"])
  want = _accuracy(model, *shifted)
  report = json.loads((model_dir / "eval" / "eval_cifar10_1.json").read_text())
  assert report["cifar10_accuracy"] == pytest.approx(clean, abs=1e-12)
  assert report["cifar10_1_accuracy"] == pytest.approx(want, abs=1e-12)
  assert report["gap"] == pytest.approx(clean - want, abs=1e-12)
  assert report["num_examples"] == {"cifar10": 24, "cifar10_1": 30}
  assert report["settings"]["dataset"] == f"npz:{data}"
  assert report["settings"]["checkpoint_step"] == 5
  # Seed 003 Table 2's layout: this model's row, then the paper's, in the report and stdout.
  lines = report["table"].splitlines()
  assert lines[0].split() == ["SETUP", "CLEAN", "CIFAR-10.1"]
  assert lines[1].split()[-2:] == [f"{100 * clean:.2f}%", f"{100 * want:.2f}%"]
  assert "Nominal" in report["table"] and report["table"] in proc.stdout
  with np.load(io.BytesIO((model_dir / "eval" / "eval_cifar10_1.npz").read_bytes()),
               allow_pickle=False) as f:
    assert f["correct_cifar10_1"].shape == (30,) and f["correct_cifar10_1"].mean() == want
  scalars = _scalars(str(model_dir / "eval" / "tensorboard"))
  assert scalars["eval/cifar10_1/cifar10_1_accuracy"] == pytest.approx(want, abs=1e-6)
  assert scalars["eval/cifar10_1/cifar10_accuracy"] == pytest.approx(clean, abs=1e-6)


@pytest.mark.slow
def test_suite_from_tfds_equals_direct_computation(tmp_path):
  model_dir, model = _model_dir(tmp_path, "cifar10")
  proc = _evaluate([f"--model_dir={model_dir}", "--suite=cifar10_1", "--batch_size=8"],
                   mock=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with tfds.testing.mock_data(num_examples=20):  # the same (deterministic) mock arrays
    from rgd.data import datasets  # pylint: disable=g-import-not-at-top
    want = _accuracy(model, *datasets.load_split("cifar10_1", "test"))
    clean = _accuracy(model, *datasets.load_split("cifar10", "test"))
  report = json.loads((model_dir / "eval" / "eval_cifar10_1.json").read_text())
  assert report["cifar10_1_accuracy"] == pytest.approx(want, abs=1e-12)
  assert report["cifar10_accuracy"] == pytest.approx(clean, abs=1e-12)
  assert report["settings"]["cifar10_1"] == "tfds:cifar10_1/v6"
  # Per class on both sets, named by the run's data set (CIFAR-10's classes).
  with tfds.testing.mock_data(num_examples=20):
    shifted, clean_set = datasets.load_split("cifar10_1", "test"), datasets.load_split(
        "cifar10", "test")
  names = {r["label"]: r["name"] for r in report["per_class"]}
  assert names.get(0, "airplane") == "airplane" and names.get(9, "truck") == "truck"
  for row in report["per_class"]:
    for key, (images, labels) in (("cifar10", clean_set), ("cifar10_1", shifted)):
      mask = labels == row["label"]
      assert row[f"{key}_accuracy"] == pytest.approx(
          _accuracy(model, images[mask], labels[mask]), abs=1e-12)


@pytest.mark.slow
def test_suite_refuses_a_model_without_cifar10s_classes(tmp_path, capsys):
  """rgd.evaluate's main under its exit contract (rgd.cli.run, absl flags) in this process; the
  real process's status 2 on bad input: tests/test_exit_statuses.py (rgd.evaluate)."""
  from rgd import evaluate  # pylint: disable=g-import-not-at-top
  data = write_npz_dataset(str(tmp_path / "data"), num_train=8, num_test=8, num_classes=100)
  model_dir, _ = _model_dir(tmp_path, f"npz:{data}", num_classes=100)
  _write_npy_pair(str(tmp_path / "c101"))
  capsys.readouterr()
  code = run_main(evaluate.main, "rgd.evaluate", [
      "rgd.evaluate", f"--model_dir={model_dir}", "--suite=cifar10_1",
      f"--cifar10_1_dir={tmp_path / 'c101'}"])
  err = capsys.readouterr().err
  assert code == 2, err[-3000:]
  assert "100 outputs; CIFAR-10.1 has CIFAR-10's 10 classes" in err
  assert "Traceback" not in err


@pytest.mark.slow
def test_cifar10c_takes_the_clean_split_from_the_run_offline(tmp_path):
  """A run trained on npz:DIR, evaluated with --cifar10c_dir and no --dataset: status 0, the
  clean accuracy is the run's test split's, and tfds is never asked (an empty TFDS_DATA_DIR
  would make any tfds access fail offline)."""
  data = write_npz_dataset(str(tmp_path / "data"), num_train=8, num_test=12)
  model_dir, model = _model_dir(tmp_path, f"npz:{data}")
  _write_folder(str(tmp_path / "c10c"))
  proc = _evaluate([f"--model_dir={model_dir}", "--suite=cifar10c",
                    f"--cifar10c_dir={tmp_path / 'c10c'}", "--batch_size=8"],
                   env={"TFDS_DATA_DIR": str(tmp_path / "no_tfds")})
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((model_dir / "eval" / "eval_cifar10c.json").read_text())
  with np.load(os.path.join(data, "test.npz")) as f:
    assert report["clean_accuracy"] == pytest.approx(_accuracy(model, f["image"], f["label"]),
                                                     abs=1e-12)
  assert report["settings"]["dataset"] == f"npz:{data}"
  assert len(report["corruptions"]) == len(cifar10c.CORRUPTIONS)
  assert not os.path.exists(tmp_path / "no_tfds")
