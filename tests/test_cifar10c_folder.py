"""CIFAR-10-C from Hendrycks' folder: `DIR/<corruption>.npy` (severities 1..5 in
order) and `DIR/labels.npy`, written small by the test, give the errors and mCE a direct numpy
computation gives; malformed folders are DataErrors (exit 2) naming the file."""
import os

import keras
import numpy as np
import pytest

from conftest import run_main, write_npz_dataset
from rgd.errors import DataError
from rgd.evaluation import cifar10c

N = 6  # images per severity (Hendrycks': 10,000)


def _write_folder(folder, seed=0):
  rng = np.random.RandomState(seed)
  os.makedirs(folder, exist_ok=True)
  labels = rng.randint(0, 10, 5 * N).astype(np.int64)
  np.save(os.path.join(folder, "labels.npy"), labels)
  images = {}
  for c, _ in cifar10c.CORRUPTIONS:
    name = cifar10c.FOLDER_NAMES.get(c, c)
    images[c] = rng.randint(0, 256, (5 * N, 32, 32, 3)).astype(np.uint8)
    np.save(os.path.join(folder, f"{name}.npy"), images[c])
  return images, labels


def _model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])


def _expected_errors(model, images, labels):
  """[15, 5] top-1 errors straight from the arrays: severity s is rows (s-1)N .. sN."""
  out = []
  for c, _ in cifar10c.CORRUPTIONS:
    pred = np.argmax(model.predict(images[c].astype(np.float32) / 255., verbose=0), axis=1)
    wrong = (pred != labels).reshape(5, N)
    out.append(wrong.mean(axis=1))
  return np.array(out)


def test_folder_gives_the_numpy_errors_and_mce(tmp_path):
  images, labels = _write_folder(str(tmp_path / "c10c"))
  model = _model()
  report = cifar10c.evaluate_cifar10c(model, batch_size=4, log=lambda *_: None,
                                      loader=cifar10c.FolderLoader(str(tmp_path / "c10c")))
  want = _expected_errors(model, images, labels)
  got = np.array([report["errors"][c] for c, _ in cifar10c.CORRUPTIONS])
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert report["mce"] == pytest.approx(want.mean(axis=1).mean(), abs=1e-12)
  assert report["num_examples"] == N


@pytest.mark.parametrize("case,match", [
    ("missing", r"glass_blur\.npy: missing"),
    ("shape", r"snow\.npy: uint8 \(30, 32, 32\)"),
    ("dtype", r"fog\.npy: float32"),
    ("count", r"pixelate\.npy: 25 images but labels\.npy has 30"),
    ("labels", r"labels\.npy: shape \(29,\)"),
    ("pickle", r"contrast\.npy: not a plain \.npy array"),
])
def test_malformed_folder_names_the_file(tmp_path, case, match):
  folder = str(tmp_path / "c10c")
  images, labels = _write_folder(folder)

  def path(name):
    return os.path.join(folder, f"{name}.npy")

  if case == "missing":
    os.remove(path("glass_blur"))
  elif case == "shape":
    np.save(path("snow"), images["snow"][..., 0])
  elif case == "dtype":
    np.save(path("fog"), images["fog"].astype(np.float32))
  elif case == "count":
    np.save(path("pixelate"), images["pixelate"][:25])
  elif case == "labels":
    np.save(path("labels"), labels[:29])
  elif case == "pickle":
    np.save(path("contrast"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(DataError, match=match):
    cifar10c.evaluate_cifar10c(_model(), batch_size=8, log=lambda *_: None,
                               loader=cifar10c.FolderLoader(folder))


@pytest.mark.slow
def test_entry_point_exits_2_naming_a_missing_file(tmp_path, capfd, caplog):
  """rgd.evaluate's main under its exit contract (rgd.cli.run with absl flags) in this process;
  the real process's status 2 on bad input: tests/test_exit_statuses.py (rgd.evaluate)."""
  from rgd import evaluate  # pylint: disable=g-import-not-at-top
  _write_folder(str(tmp_path / "c10c"))
  os.remove(tmp_path / "c10c" / "zoom_blur.npy")
  data = write_npz_dataset(str(tmp_path / "data"), num_train=8, num_test=8)
  _model().save(str(tmp_path / "m.keras"))
  capfd.readouterr()
  caplog.set_level("INFO")
  code = run_main(evaluate.main, "rgd.evaluate", [
      "rgd.evaluate", f"--model={tmp_path / 'm.keras'}", "--suite=cifar10c",
      f"--cifar10c_dir={tmp_path / 'c10c'}", f"--dataset=npz:{data}", "--batch_size=8",
      f"--output_dir={tmp_path / 'eval'}"])
  err = capfd.readouterr().err
  # The corruptions before zoom blur were evaluated through the folder; zoom blur stops it.
  assert code == 2, err[-3000:]
  assert "zoom_blur.npy: missing" in err and "Traceback" not in err
  assert "cifar10c motion_blur_5" in caplog.text  # its absl log line (stderr in a process)
