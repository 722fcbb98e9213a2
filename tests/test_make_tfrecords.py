"""tools/make_tfrecords.py and rgd.datagen.pipeline (in process): round trip through the
training reader, top-k filtering, metadata, errors, generators by name, and an interrupted run
finished by a re-run."""
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd.data import datasets, tfrecord
from rgd.errors import ConfigError, DataError
from rgd.datagen import generators, labeling, metadata, pipeline, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "make_tfrecords.py")


def _run(out, path, **kw):
  kw.setdefault("examples_per_shard", 7)
  return pipeline.make_tfrecords(str(out), generators.make(f"files:{path}"), **kw)


def _by_bytes(images, labels):
  """Order-free comparison key: sorted (image bytes, label) pairs."""
  return sorted(zip((im.tobytes() for im in images), (int(l) for l in labels)))


def _colour_model(num_classes=3):
  """logits_c = 10 * mean of channel c (any image size)."""
  inputs = keras.Input((None, None, 3))
  dense = keras.layers.Dense(num_classes)
  out = dense(keras.layers.GlobalAveragePooling2D()(inputs))
  dense.set_weights([np.eye(3, num_classes, dtype=np.float32) * 10,
                     np.zeros(num_classes, np.float32)])
  return keras.Model(inputs, out, name="colour")


def test_round_trip_through_the_training_reader(tmp_path):
  x, y = make_images(30, num_classes=4, size=8, seed=2)
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y)
  meta = _run(tmp_path / "out", path, examples_per_shard=6)
  assert meta["num_examples"] == 30 and len(meta["shards"]) == 5
  assert meta["counts_per_class"] == np.bincount(y, minlength=4).tolist()
  assert sorted(os.listdir(tmp_path / "out")) == [
      f"generated-0000{i}-of-00005.tfrecord" for i in range(5)] + ["metadata.json"]
  for shard in meta["shards"]:
    with open(tmp_path / "out" / shard["name"], "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]

  # rgd.data.datasets's training reader (generated only, no augmentation, unsmoothed labels): with 5
  # equal shards interleaved 5 at a time, one batch of 30 is exactly one pass over the shards.
  ds = datasets.make_train_dataset(x[:1], y[:1], 4, global_batch_size=30,
                               generated_pattern=meta["pattern"], mixing_ratio=0.0,
                               augment=False, generated_shuffle_buffer=0,
                               generated_label_smoothing=0.0)
  batch = next(iter(ds))
  images = batch["image"].numpy()[0]
  if images.dtype != np.uint8:  # uint8 without a batch augmentation, else float in [0, 1]
    images = np.round(images * 255).astype(np.uint8)
  labels = np.argmax(batch["label"].numpy()[0], axis=1)
  assert not batch["is_real"].numpy().any()
  np.testing.assert_array_equal(batch["label"].numpy()[0].max(axis=1), 1.0)
  assert _by_bytes(images, labels) == _by_bytes(x, y)

  # Shard after shard, the records follow the seeded plan; without a labeller confidence is -1.
  ex = tfrecord.parse_batch(next(iter(
      tf.data.TFRecordDataset(tfrecord.list_shards(meta["pattern"])).batch(30))))
  # The selection lists the kept images class by class, then the seed-0 permutation orders them.
  kept = np.concatenate([np.flatnonzero(y == c) for c in range(4)])
  order = kept[np.random.default_rng(0).permutation(30)]
  np.testing.assert_array_equal(ex["image"].numpy(), x[order])
  np.testing.assert_array_equal(ex["label"].numpy(), y[order])
  np.testing.assert_array_equal(ex["confidence"].numpy(), -1.0)


def test_top_k_filtering_with_a_labeller(tmp_path):
  x, _ = make_images(40, num_classes=3, size=8, seed=3)
  path = str(tmp_path / "u.npy")
  np.save(path, x)  # No labels: the labeller gives them.
  labeler = labeling.Labeler(_colour_model(), name="colour")
  meta = _run(tmp_path / "out", path, labeler=labeler, keep_per_class=4, batch_size=16)

  labels, logp = labeler(x)
  # Brute force: per class, sort by (-log p, index) and keep the first 4.
  expected = np.concatenate([np.flatnonzero(labels == c)[
      np.lexsort((np.flatnonzero(labels == c), -logp[labels == c]))[:4]] for c in range(3)])
  assert meta["counts_per_class"] == [min(4, int((labels == c).sum())) for c in range(3)]
  assert meta["labelled_per_class"] == np.bincount(labels, minlength=3).tolist()
  ex = tfrecord.parse_batch(next(iter(
      tfrecord.read_examples(meta["pattern"], shuffle_buffer=0, repeat=False).batch(100))))
  assert _by_bytes(ex["image"].numpy(), ex["label"].numpy()) == \
      _by_bytes(x[expected], labels[expected])
  conf = dict(zip((im.tobytes() for im in x[expected]), np.exp(logp[expected])))
  for im, c in zip(ex["image"].numpy(), ex["confidence"].numpy()):
    assert c == pytest.approx(conf[im.tobytes()], rel=1e-6)
  assert meta["confidence"]["per_class"][0]["min"] == pytest.approx(
      min(np.exp(logp[expected][labels[expected] == 0])))
  assert meta["labeler"]["num_classes"] == 3


def test_bad_jobs_are_refused(tmp_path):
  x, y = make_images(12, num_classes=3, size=8)
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y)
  with pytest.raises(DataError, match="labeller colour has 3 classes but the data has 4"):
    _run(tmp_path / "a", path, labeler=labeling.Labeler(_colour_model()), num_classes=4)
  with pytest.raises(ConfigError, match="needs a labeller"):
    _run(tmp_path / "b", path, keep_per_class=2)
  with pytest.raises(ConfigError, match="examples_per_shard must be positive, got 0"):
    _run(tmp_path / "b", path, examples_per_shard=0)
  with pytest.raises(ConfigError, match="the Beam runner needs images every worker can read; "
                     "'gaussian' generates into a local cache"):
    pipeline.make_tfrecords(str(tmp_path / "b"), generators.make("gaussian"), runner="X")
  with pytest.raises(ConfigError, match="loads the labeller on every worker"):
    _run(tmp_path / "b", path, labeler=labeling.Labeler(_colour_model()), runner="X")
  assert not os.path.exists(tmp_path / "b")  # Refused before anything is written.
  np.save(tmp_path / "nolabels.npy", x)
  with pytest.raises(DataError, match=r"nolabels\.npy: has no labels and no labeller"):
    _run(tmp_path / "c", str(tmp_path / "nolabels.npy"))
  with pytest.raises(DataError, match=r"s\.npz: label 2 of image \d+ is out of range \[0, 2\)"):
    _run(tmp_path / "d", path, num_classes=2)
  _run(tmp_path / "e", path)
  with pytest.raises(metadata.JobMismatchError, match="examples_per_shard: was 7, now 5"):
    _run(tmp_path / "e", path, examples_per_shard=5)
  assert _run(tmp_path / "e", path)["num_examples"] == 12  # Same job: already complete.


def _tool(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, TOOL, *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_cli_error_names_the_file(tmp_path):
  path = str(tmp_path / "float.npz")
  np.savez(path, image=np.zeros((2, 8, 8, 3), np.float32))
  proc = _tool(f"--input={path}", f"--output_dir={tmp_path / 'out'}")
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2  # rgd.cli.run: bad data
  assert f"make_tfrecords.py: {path}['image']: images are float32; expected uint8" in err
  assert "Traceback" not in err


def test_killed_run_leaves_nothing_complete_and_a_rerun_finishes(tmp_path):
  x, y = make_images(20, num_classes=4, size=8, seed=4)
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y)
  out = tmp_path / "out"
  args = [f"--input={path}", f"--output_dir={out}", "--examples_per_shard=5"]
  proc = _tool(*args, "--debug_shard_delay_s=30")
  deadline = time.time() + 120
  while not glob.glob(str(out / ".work" / "generated-*.tfrecord")):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # Killed during the sleep after shard 0: nothing looks like a finished output.
  assert not os.path.exists(out / "metadata.json")
  assert glob.glob(str(out / "*.tfrecord")) == []
  with pytest.raises(FileNotFoundError):
    tfrecord.list_shards(str(out / "generated-*.tfrecord"))
  done = out / ".work" / "generated-00000-of-00004.tfrecord"
  inode = os.stat(done).st_ino

  proc = _tool(*args)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert os.stat(out / "generated-00000-of-00004.tfrecord").st_ino == inode  # Not rewritten.
  assert not os.path.exists(out / ".work")
  with open(out / "metadata.json") as f:
    meta = json.load(f)
  assert meta["num_examples"] == 20 and len(meta["shards"]) == 4
  # Identical to an uninterrupted run.
  clean = _run(tmp_path / "clean", path, examples_per_shard=5)
  assert [s["sha256"] for s in meta["shards"]] == [s["sha256"] for s in clean["shards"]]


def test_generators_by_name(tmp_path, monkeypatch):
  x, y = make_images(12, num_classes=3, size=8, seed=5)
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y)
  images = generators.make(f"files:{path}", num_per_class=5)  # Settings it does not take: ignored.
  stat = os.stat(path)
  assert images.source == {"kind": "input", "path": path, "size": stat.st_size,
                           "mtime": int(stat.st_mtime)}
  assert images.shared and (images.worker, images.num_workers) == (0, 1)
  gauss = generators.make("gaussian", dataset="npz:/d", num_per_class=5, num_images=7)
  assert gauss.source == {"kind": "gaussian", "dataset": "npz:/d", "split": "train_full",
                          "num_per_class": 5, "generator_seed": 0}
  assert not gauss.shared
  with pytest.raises(ConfigError, match=r"generator 'nope:x': unknown; expected one of 'adm', "
                     r"'edm', 'files', 'gaussian'"):
    generators.make("nope:x")
  with pytest.raises(ConfigError, match="'gaussian' takes no argument"):
    generators.make("gaussian:cifar10")
  with pytest.raises(ConfigError, match="'edm:DIR' needs the folder"):
    generators.make("edm")

  # A new generator is one entry: here every image of `files` flipped left-right, written into
  # the job's cache when (and only when) the job needs the images.
  opened = []

  @generators.register("flipped")
  def flipped(arg):
    def open_source(cache_dir):
      opened.append(cache_dir)
      os.makedirs(cache_dir, exist_ok=True)
      np.savez(os.path.join(cache_dir, "f.npz"), image=x[:, :, ::-1], label=y)
      return sources.open_source(os.path.join(cache_dir, "f.npz"))
    return generators.Images({"kind": "flipped", "arg": arg}, open_source)
  monkeypatch.setitem(generators.REGISTRY, "flipped", flipped)
  meta = pipeline.make_tfrecords(str(tmp_path / "out"), generators.make("flipped:1"),
                                 examples_per_shard=12)
  assert meta["source"] == {"kind": "flipped", "arg": "1"} and len(opened) == 1
  ex = tfrecord.parse_batch(next(iter(
      tf.data.TFRecordDataset(tfrecord.list_shards(meta["pattern"])).batch(12))))
  assert _by_bytes(ex["image"].numpy(), ex["label"].numpy()) == _by_bytes(x[:, :, ::-1], y)
  pipeline.make_tfrecords(str(tmp_path / "out"), generators.make("flipped:1"),
                          examples_per_shard=12)
  assert len(opened) == 1  # Complete already: not generated again.


def test_a_job_split_over_workers_writes_each_workers_share():
  assert pipeline.worker_share("gs://b/out", 10, 1, 3) == ("gs://b/out/worker-00001-of-00003", 3)
  assert [pipeline.worker_share("o", 10, w, 3)[1] for w in range(3)] == [4, 3, 3]
  assert pipeline.worker_share("gs://b/out/", None, 2, 3) == ("gs://b/out/worker-00002-of-00003",
                                                             None)
  assert pipeline.worker_share("gs://b/out", 10, 0, 1) == ("gs://b/out", 10)
