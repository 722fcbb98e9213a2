"""CIFAR-10-C: mCE arithmetic by hand, and rgd.evaluate's main (`--suite=cifar10c`, absl flags,
rgd.cli.run) end to end under tfds.testing.mock_data (offline: nothing is downloaded)."""
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from rgd.evaluation import cifar10c
from conftest import run_main


def test_mce_arithmetic_by_hand():
  # Two corruptions, five severities: per-corruption error = mean over severities,
  # mCE = mean over corruptions (seed 003 Sec. 3, absolute errors).
  errors = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.0, 0.0, 0.0, 1.0]]
  per, mce = cifar10c.mean_corruption_error(errors)
  np.testing.assert_allclose(per, [0.3, 0.2])
  assert mce == pytest.approx(0.25)


def test_table1_rows_are_consistent():
  for setup, (mce, errs) in cifar10c.TABLE1.items():
    assert len(errs) == 15
    assert np.mean(errs) == pytest.approx(mce, abs=0.06), setup  # rounding of the table


def test_entry_point_under_mock_data(tmp_path, capsys):
  model_dir = tmp_path / "run"
  os.makedirs(model_dir)
  # Predicts class 0 for every image: its error on a split is the share of labels != 0.
  model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(10)])
  model.layers[-1].set_weights([np.zeros((3, 10), np.float32),
                                5 * np.eye(10, dtype=np.float32)[0]])
  model.save(model_dir / "model.keras")
  (model_dir / "model.json").write_text(json.dumps({"step": 7}))
  # rgd.evaluate's main under its exit contract (rgd.cli.run, absl flags), in this process (it
  # was a fresh `python -c` process running app.run(evaluate.main)), under tfds' mock data.
  from rgd import evaluate  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  with tfds.testing.mock_data(num_examples=6):
    code = run_main(evaluate.main, "rgd.evaluate", [
        "rgd.evaluate", f"--model_dir={model_dir}", "--suite=cifar10c", "--num_examples=6",
        "--batch_size=4"])
  out, err = capsys.readouterr()
  assert code == 0, err[-3000:]
  assert "mCE" in out and "Gauss" in out
  with tfds.testing.mock_data(num_examples=6):
    # The same mock data again: the expected errors of the constant classifier.
    expected = {c: [float(np.mean(cifar10c.load_corruption(c, s, num_examples=6)[1] != 0))
                    for s in cifar10c.SEVERITIES] for c, _ in cifar10c.CORRUPTIONS[:2]}
  out = model_dir / "eval"
  report = json.loads((out / "eval_cifar10c.json").read_text())
  assert report["suite"] == "cifar10c" and report["num_examples"] == 6
  assert report["corruptions"] == [c for c, _ in cifar10c.CORRUPTIONS]
  assert report["settings"]["checkpoint_step"] == 7
  for c, errs in expected.items():
    np.testing.assert_allclose(report["errors"][c], errs)
  errors = np.array([report["errors"][c] for c in report["corruptions"]])
  assert report["mce"] == pytest.approx(errors.mean(axis=1).mean())
  with np.load(io.BytesIO((out / "eval_cifar10c.npz").read_bytes()), allow_pickle=False) as f:
    assert f["correct"].shape == (15, 5, 6)
    np.testing.assert_allclose(1 - f["correct"].mean(axis=2), errors)
  assert (out / "eval_cifar10c.png").read_bytes()[:4] == b"\x89PNG"
  assert os.listdir(out / "tensorboard")
  lines = report["table"].splitlines()
  assert "Gauss" in lines[1] and "JPEG" in lines[1] and "7.83%" in report["table"]
