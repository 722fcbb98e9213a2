"""The labelling job's Beam runner (rgd.datagen.pipeline.make_tfrecords(runner=...),
tools/make_tfrecords.py --runner=...): on the same input, the Beam output holds exactly the
in-process runner's records, class by class; ties in score are
broken the same way (lower index first) however the input is cut into chunks; the tool's flags.
Skipped without Apache Beam (pip install -e ".[beam]")."""
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("apache_beam")

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from conftest import make_images
from rgd.runtime import fileio
from rgd.data import tfrecord
from rgd.datagen import beam_pipeline, generators, labeling, metadata, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "make_tfrecords.py")
# Two worker processes: elements (chunks, the DoFns, the labeller path) really go through
# pickling, and the labeller is loaded in each worker's DoFn.setup.
TWO_PROCESSES = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def _colour_labeller(path, num_classes=3):
  """logits_c = 10 * mean of channel c, saved as .keras (workers load it from the path)."""
  inputs = keras.Input((None, None, 3))
  dense = keras.layers.Dense(num_classes)
  out = dense(keras.layers.GlobalAveragePooling2D()(inputs))
  dense.set_weights([np.eye(3, num_classes, dtype=np.float32) * 10,
                     np.zeros(num_classes, np.float32)])
  keras.Model(inputs, out).save(path)
  return labeling.Labeler.load(path)


def _corner_labeller(path, size):
  """logits = 4 * pixel (0, 0): every image sharing that pixel gets exactly the same score."""
  inputs = keras.Input((size, size, 3))
  corner = keras.layers.Flatten()(keras.layers.Cropping2D(((0, size - 1), (0, size - 1)))(inputs))
  dense = keras.layers.Dense(3)
  out = dense(corner)
  dense.set_weights([np.eye(3, dtype=np.float32) * 4, np.zeros(3, np.float32)])
  keras.Model(inputs, out).save(path)
  return labeling.Labeler.load(path)


def _records_per_class(pattern):
  """{label: set of (image bytes, confidence as float32)} of every record under `pattern`."""
  out = defaultdict(set)
  ds = tf.data.TFRecordDataset(tfrecord.list_shards(pattern)).batch(4096)
  for batch in ds:
    ex = tfrecord.parse_batch(batch)
    for im, label, conf in zip(ex["image"].numpy(), ex["label"].numpy(),
                               ex["confidence"].numpy()):
      out[int(label)].add((im.tobytes(), float(conf)))
  return dict(out)


def _both(tmp_path, path, labeler, beam_options=TWO_PROCESSES, chunk_size=4096, **kw):
  images = generators.make(f"files:{path}")
  single = pipeline.make_tfrecords(str(tmp_path / "single"), images, labeler=labeler, **kw)
  beam = pipeline.make_tfrecords(str(tmp_path / "beam"), images, labeler=labeler,
                                 runner="DirectRunner", beam_options=beam_options,
                                 chunk_size=chunk_size, **kw)
  return single, beam


def _same_metadata(single, beam):
  differ = {"pattern", "shards", "job", "created", "command", "beam"}
  assert {k: v for k, v in single.items() if k not in differ} == \
      {k: v for k, v in beam.items() if k not in differ}
  assert len(beam["shards"]) == len(single["shards"])
  assert sum(s["num_examples"] for s in beam["shards"]) == single["num_examples"]
  assert beam["job"] == dict(single["job"], writer="beam")


def test_same_records_per_class_as_the_single_process_path(tmp_path):
  # 20,000 8x8 images in three .npy files of uneven sizes (chunks of 1024 span files), labelled
  # by a Keras classifier, best 1,500 of each class kept (out of about 6,700).
  x, _ = make_images(20_000, num_classes=3, size=8, seed=3)
  folder = tmp_path / "in"
  folder.mkdir()
  for name, (a, b) in zip("abc", [(0, 7001), (7001, 13000), (13000, 20000)]):
    np.save(folder / f"{name}.npy", x[a:b])
  labeler = _colour_labeller(str(tmp_path / "colour.keras"))
  single, beam = _both(tmp_path, str(folder), labeler, keep_per_class=1500,
                       examples_per_shard=1000, batch_size=256, chunk_size=1024)
  assert beam["counts_per_class"] == [1500] * 3
  assert sum(beam["labelled_per_class"]) == 20_000
  _same_metadata(single, beam)
  got, expected = _records_per_class(beam["pattern"]), _records_per_class(single["pattern"])
  assert sorted(got) == [0, 1, 2]
  for c in range(3):
    assert got[c] == expected[c], c

  # Keep everything (the 100M-image case: no selection pass), labels from the labeller.
  out = tmp_path / "all"
  images = generators.make(f"files:{folder / 'b.npy'}")
  beam = pipeline.make_tfrecords(str(out / "beam"), images, labeler=labeler,
                                 examples_per_shard=2000, runner="DirectRunner")
  single = pipeline.make_tfrecords(str(out / "single"), images, labeler=labeler,
                                   examples_per_shard=2000)
  _same_metadata(single, beam)
  assert _records_per_class(beam["pattern"]) == _records_per_class(single["pattern"])


def test_ties_break_by_lower_index_in_both_paths(tmp_path):
  # 240 images, 4 distinct corner pixels per class: each class's scores come in tied groups
  # of ~20, and the cut at k=30 falls inside a group. Chunks of 32 (batches of 16) spread every
  # group over several chunks, so the combiner must merge ties from different workers.
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (240, 4, 4, 3), dtype=np.uint8)  # Random elsewhere: unique bytes.
  corners = np.array([[200, 10, 10], [150, 10, 10], [10, 220, 10], [10, 140, 10],
                      [10, 10, 230], [10, 10, 120]], np.uint8)
  x[:, 0, 0] = corners[rng.integers(0, len(corners), 240)]
  path = str(tmp_path / "ties.npy")
  np.save(path, x)
  labeler = _corner_labeller(str(tmp_path / "corner.keras"), 4)
  labels, logp = labeler(x)
  # Brute force: per class, sort by (score descending, index ascending), keep the first 30.
  expected = {}
  for c in range(3):
    idx = np.flatnonzero(labels == c)
    best = idx[np.lexsort((idx, -logp[idx]))[:30]]
    assert logp[best[-1]] == logp[idx[np.lexsort((idx, -logp[idx]))[30]]]  # A tie at the cut.
    expected[c] = {(x[i].tobytes(), float(np.float32(np.exp(logp[i])))) for i in best}
  single, beam = _both(tmp_path, path, labeler, beam_options=(),
                       keep_per_class=30, examples_per_shard=25, batch_size=16, chunk_size=32)
  assert _records_per_class(single["pattern"]) == expected
  assert _records_per_class(beam["pattern"]) == expected
  _same_metadata(single, beam)


def test_the_tool_runs_on_beam_with_the_input_labels(tmp_path):
  x, y = make_images(300, num_classes=4, size=8, seed=6)
  path = str(tmp_path / "s.npz")
  np.savez_compressed(path, image=x, label=y)  # Compressed: extracted once, then chunked.
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, TOOL, f"--input={path}", f"--output_dir={out}", "--runner=DirectRunner",
       "--beam_pipeline_options=--direct_num_workers=1", "--examples_per_shard=100"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  with open(out / "metadata.json") as f:
    meta = json.load(f)
  assert meta["beam"]["runner"] == "DirectRunner"
  assert meta["beam"]["options"] == ["--runner=DirectRunner", "--direct_num_workers=1"]
  assert meta["counts_per_class"] == np.bincount(y, minlength=4).tolist()
  assert sorted(os.listdir(out)) == [f"generated-0000{i}-of-00003.tfrecord" for i in range(3)] + [
      "metadata.json"]
  assert _records_per_class(meta["pattern"]) == {
      c: {(im.tobytes(), -1.0) for im in x[y == c]} for c in range(4)}
  # The shards follow the seeded hash of the index, sorted by it within a shard.
  h = beam_pipeline.shard_hash(np.arange(300), 0)
  first = tfrecord.parse_batch(next(iter(tf.data.TFRecordDataset(
      str(out / meta["shards"][0]["name"])).batch(300))))
  in_first = np.flatnonzero(h % np.uint64(3) == 0)
  np.testing.assert_array_equal(first["image"].numpy(), x[in_first[np.argsort(h[in_first])]])


def test_inputs_labeller_and_output_in_a_bucket(tmp_path, monkeypatch):
  # ram:// stands for gs:// (in one process: the in-memory DirectRunner). Nothing may reach
  # local disk: run in an empty folder and check that it stays empty.
  monkeypatch.chdir(tmp_path)
  x, _ = make_images(200, num_classes=3, size=8, seed=7)
  fileio.save_npz("ram://beam/in/a.npz", image=x[:120])
  fileio.save_npz("ram://beam/in/b.npz", image=x[120:])  # A glob of .npz: Beam only.
  keras_model = _colour_labeller(str(tmp_path / "colour.keras"))
  keras_model.model.save("ram://beam/colour.keras")
  os.remove(tmp_path / "colour.keras")
  labeler = labeling.Labeler.load("ram://beam/colour.keras")
  images = generators.make("files:ram://beam/in/*.npz")
  meta = pipeline.make_tfrecords(
      "ram://beam/out", images, labeler=labeler, keep_per_class=20, examples_per_shard=30,
      batch_size=32, chunk_size=64, runner="DirectRunner")
  assert os.listdir(tmp_path) == []
  assert meta["labeler"]["path"] == "ram://beam/colour.keras"
  assert meta["pattern"] == "ram://beam/out/generated-*.tfrecord"
  assert sorted(tf.io.gfile.listdir("ram://beam/out")) == [
      f"generated-0000{i}-of-00002.tfrecord" for i in range(2)] + ["metadata.json"]
  labels, logp = labeler(x)
  expected = {}
  for c in range(3):
    idx = np.flatnonzero(labels == c)
    best = idx[np.lexsort((idx, -logp[idx]))[:20]]
    expected[c] = {(x[i].tobytes(), float(np.float32(np.exp(logp[i])))) for i in best}
  assert _records_per_class(meta["pattern"]) == expected

  # A finished job is not redone; another job into the same folder is refused, also by the
  # in-process runner (its job has no `writer: beam`).
  def again(**kw):
    args = dict(labeler=labeler, keep_per_class=20, examples_per_shard=30, batch_size=32,
                chunk_size=64, runner="DirectRunner")
    args.update(kw)
    return pipeline.make_tfrecords("ram://beam/out", images, **args)
  assert again()["created"] == meta["created"]
  with pytest.raises(metadata.JobMismatchError, match="examples_per_shard: was 30, now 10"):
    again(examples_per_shard=10)
  with pytest.raises(metadata.JobMismatchError, match="writer: was 'beam', now None"):
    again(runner=None)


def test_beam_refuses_an_unfinished_in_process_run(tmp_path):
  x, y = make_images(10, num_classes=2, size=8, seed=8)
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y)
  os.makedirs(tmp_path / "out" / ".work")
  open(tmp_path / "out" / ".work" / "plan.npz", "wb").close()
  with pytest.raises(metadata.JobMismatchError, match=r"holds an unfinished in-process run "
                     r"\(\.work/plan\.npz\); finish it without a runner"):
    pipeline.make_tfrecords(str(tmp_path / "out"), generators.make(f"files:{path}"),
                            runner="DirectRunner")
