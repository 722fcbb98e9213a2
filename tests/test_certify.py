"""rgd.certify end to end (the real entry point on a tiny model), the generalisation gap, and
the certified training path of rgd.train (objective, bind, certified validation, export)."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images, run_main, write_npz_dataset
from rgd import models
from rgd.evaluation import certified
from rgd.runtime import weight_average
from rgd.certified import certificate, layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generalization_gap_is_train_minus_test_accuracy(tmp_path):
  keras.utils.set_random_seed(0)
  net = models.get_model("liresnet-L1W8", num_classes=10, input_shape=(16, 16, 3))
  x_train, y_train = make_images(48, size=16, seed=3)
  x_test, y_test = make_images(32, size=16, seed=4)
  report = certified.certify_model(net, x_test, y_test, 36 / 255, None, x_train, y_train,
                                 output_dir=str(tmp_path))
  acc = lambda x, y: np.mean(np.argmax(net(x.astype(np.float32) / 255).numpy(), 1) == y)
  assert report["generalization_gap"] == pytest.approx(acc(x_train, y_train) - acc(x_test, y_test))
  assert report["clean_accuracy"] == pytest.approx(acc(x_test, y_test))
  # The radius table's first row (r = 0) splits the test set into correct and wrong.
  row0 = report["radius_distribution"][0]
  assert row0["correct"] <= report["clean_accuracy"]
  for name in ("json", "md", "png", "npz"):
    assert os.path.exists(tmp_path / f"certify_l2_{36 / 255:.6g}.{name}")


def test_certify_entry_point_end_to_end(tmp_path, capfd):
  """A tiny trained-and-exported model directory -> rgd.certify's main (`python -m rgd.certify
  --model_dir`) in this process; the real process starts in tests/test_exit_statuses.py."""
  data_dir = write_npz_dataset(str(tmp_path / "data"), num_train=64, num_test=32)
  keras.utils.set_random_seed(0)
  net = models.get_model("linf_dist_net-3-16", num_classes=10)
  x, _ = make_images(32)
  net(x.astype(np.float32) / 255, training=True)       # a mean-shift update, as training does
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  net.save(str(model_dir / "model.keras"))
  (model_dir / "model.json").write_text(json.dumps({"step": 7, "eps": 8 / 255, "norm": "linf",
                                                   "class_names": list("ABCDEFGHIJ")}))
  from rgd import certify  # pylint: disable=g-import-not-at-top  (main in this process)
  capfd.readouterr()
  code = run_main(certify.main, "rgd.certify", [
      "rgd.certify", f"--model_dir={model_dir}", f"--dataset=npz:{data_dir}",
      "--radii=0,2/255,16/255", "--num_train_examples=64"])
  result = capfd.readouterr()
  assert code == 0, result.err[-3000:]
  name = model_dir / "eval" / f"certify_linf_{8 / 255:.6g}"
  report = json.loads(open(f"{name}.json").read())
  assert report["num_examples"] == 32 and report["settings"]["checkpoint_step"] == 7
  assert [r["radius"] for r in report["certified_at"]] == pytest.approx(
      [0, 2 / 255, 8 / 255, 16 / 255])
  assert report["certified_at"][0]["certified_accuracy"] <= report["clean_accuracy"]
  accs = [r["certified_accuracy"] for r in report["certified_at"]]
  assert accs == sorted(accs, reverse=True)
  assert "generalization_gap" in report and "| radius | certified accuracy |" in open(
      f"{name}.md").read()
  assert open(f"{name}.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # The certificate in the report is the one certify() computes in-process.
  reloaded = keras.saving.load_model(str(model_dir / "model.keras"))
  xt = np.load(os.path.join(data_dir, "test.npz"))
  res = certificate.certify(reloaded, xt["image"], xt["label"], radii=(8 / 255,))
  assert report["certified_accuracy"] == pytest.approx(certificate.certified_accuracy(res, 8 / 255))
  # Per class, named by model.json, from the same per-example flags.
  certified = res["correct"] & res["certified_at"][8 / 255]
  for row in report["per_class"]:
    mask = xt["label"] == row["label"]
    assert row["name"] == "ABCDEFGHIJ"[row["label"]]
    assert row["clean_accuracy"] == pytest.approx(res["correct"][mask].mean())
    assert row["certified_accuracy"] == pytest.approx(certified[mask].mean())
  assert "| class | name | examples | clean accuracy | certified accuracy |" in open(
      f"{name}.md").read()
  assert "weakest classes (certified): " in result.out


def test_custom_layers_survive_save_and_load(tmp_path):
  x = np.random.RandomState(0).uniform(size=(4, 16, 16, 3)).astype(np.float32)
  for name in ("liresnet-L2W8", "sortnet_dropout-3-16"):
    net = models.get_model(name, num_classes=10, input_shape=(16, 16, 3))
    net(x, training=True)
    path = str(tmp_path / f"{name}.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)
    for a, b in zip(loaded.non_trainable_weights, net.non_trainable_weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())     # iterates, running means, p


def test_weight_average_follows_the_mean_shift_statistics():
  net = models.get_model("linf_dist_net-3-16", num_classes=10, input_shape=(8, 8, 3))
  avg = models.get_model("linf_dist_net-3-16", num_classes=10, input_shape=(8, 8, 3))
  ema = weight_average.WeightAverage(net, avg, 0.5)
  names = [a.path for a, _ in ema.pairs]
  assert sum("running_mean" in n for n in names) == 2          # the two mean-shift layers
  assert not any("power_iterate" in n for n in names)
  net(np.random.RandomState(0).uniform(size=(4, 8, 8, 3)).astype(np.float32), training=True)
  ema.update(100)
  running = [l for l in avg.layers if isinstance(l, layers.LinfDist)][0].running_mean
  online = [l for l in net.layers if isinstance(l, layers.LinfDist)][0].running_mean
  np.testing.assert_allclose(running.numpy(), 0.5 * online.numpy(), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("gin_file", ["gin/gloro_debug.gin", "gin/linf_dist_debug.gin"])
def test_certified_training_end_to_end(tmp_path, gin_file, capfd, caplog, monkeypatch):
  """rgd.train's main on a certified debug recipe, in this process, from the repository root
  (gin files are named from there, as in README's commands)."""
  monkeypatch.chdir(ROOT)
  from rgd import train  # pylint: disable=g-import-not-at-top
  data_dir = write_npz_dataset(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  caplog.set_level("INFO")
  code = run_main(train.main, "rgd.train", [
      "rgd.train", f"--gin_file={gin_file}", f"--model_dir={model_dir}",
      f"--gin_bindings=DATASET='npz:{data_dir}'"])
  assert code == 0, capfd.readouterr().err[-3000:]
  assert "validation: clean" in caplog.text and "certified" in caplog.text
  info = json.loads(open(os.path.join(model_dir, "model.json")).read())
  assert "robust_accuracy" in info
  events = tf.io.gfile.glob(os.path.join(model_dir, "validation", "events.out.tfevents.*"))
  tags = set()
  for e in events:
    for ev in tf.compat.v1.train.summary_iterator(e):
      tags |= {v.tag for v in ev.summary.value}
  assert "accuracy/certified" in tags
