"""Sampling an EDM into pseudo-labelled TFRecords (rgd.datagen.sample_job): the same images
whatever the number of replicas and workers, the work split, and a killed job that resumes to
exactly the images of an uninterrupted one."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from rgd.datagen import generators, pipeline
from rgd.datagen import sample_job
from rgd.edm import store, unet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "make_tfrecords.py")


def test_one_and_two_replicas_and_two_workers_give_the_same_images():
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sample_replicas_check.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "replicas 1 2" in out, out
  assert "replicas_equal True" in out, out          # bit-identical uint8 images
  assert int(re.search(r"distinct_images (\d+)", out).group(1)) == 10, out
  assert float(re.search(r"pixel_std (\S+)", out).group(1)) > 5, out   # not a blank image
  assert "workers_equal True" in out, out
  assert "labels [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]" in out, out   # image i is of class i % 3


def test_work_split_over_workers(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                                              "task": {"type": "worker", "index": 2}}))
  assert sample_job.worker_split() == (2, 3)
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                              "task": {"type": "chief", "index": 0}}))
  assert sample_job.worker_split() == (0, 2)
  monkeypatch.delenv("TF_CONFIG")
  assert sample_job.worker_split() == (0, 1)
  # Chunks of 4 of 10 images over 2 workers: worker 0 takes chunks 0 and 2, worker 1 chunk 1.
  assert sample_job.chunk_ranges(10, 4, 0, 2) == [(0, 0, 4), (2, 8, 10)]
  assert sample_job.chunk_ranges(10, 4, 1, 2) == [(1, 4, 8)]
  covered = sorted(i for w in range(3) for _, s, e in sample_job.chunk_ranges(103, 7, w, 3)
                   for i in range(s, e))
  assert covered == list(range(103))
  # The job's share of each worker: tests/test_make_tfrecords.py (pipeline.worker_share).


def _save_tiny_generator(folder):
  tf.keras.utils.set_random_seed(0)
  kwargs = dict(image_shape=[8, 8, 3], num_classes=3, model_channels=4, channel_mult=[1],
                num_blocks=1, attn_resolutions=[], dropout=0.0, label_dropout=0.0,
                name="edm_unet")
  net = store.build(kwargs)
  # EDM initialises every block's conv1 and the output conv at ~1e-5 (F ~ 0); give them
  # weights so that F and the labels matter.
  for layer in net.layers:
    if layer.name.endswith(("_conv1", "_aux_conv")):
      for v in layer.weights:
        v.assign(tf.random.stateless_normal(v.shape, [1, 2]) * 0.05)
  store.save(folder, net, kwargs, dict(num_classes=3, image_shape=[8, 8, 3], step=0))
  return folder


@pytest.mark.slow   # three sampling jobs (two of them CLI processes): ~40 s on a loaded box
def test_killed_sampling_job_resumes_to_the_uninterrupted_images(tmp_path):
  gen = _save_tiny_generator(str(tmp_path / "gen"))
  out = tmp_path / "out"
  args = [TOOL, f"--generator=edm:{gen}", "--num_images=12", "--num_steps=2", "--chunk_size=4",
          "--batch_per_device=2", f"--output_dir={out}", "--examples_per_shard=5"]
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen([sys.executable, *args, "--debug_shard_delay_s=30"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  chunks = str(out / ".work" / "cache" / "edm" / "chunk-*.npy")
  deadline = time.time() + 200
  while not glob.glob(chunks):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = sorted(glob.glob(chunks))
  assert [os.path.basename(p) for p in done] == ["chunk-00000000.npy"]   # killed after chunk 0
  inode = os.stat(done[0]).st_ino
  assert not os.path.exists(out / "metadata.json")

  proc = subprocess.run([sys.executable, *args, "--keep_cache"], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.stat(done[0]).st_ino == inode   # chunk 0 was not sampled again
  with open(out / "metadata.json") as f:
    meta = json.load(f)
  assert meta["num_examples"] == 12 and meta["counts_per_class"] == [4, 4, 4]

  images = generators.make(f"edm:{gen}", num_images=12, chunk_size=4, batch_per_device=2,
                           num_steps=2)
  assert images.source["kind"] == "edm" and images.source["num_steps"] == 2
  clean = pipeline.make_tfrecords(str(tmp_path / "clean"), images, examples_per_shard=5,
                                  keep_cache=True)
  assert [s["sha256"] for s in meta["shards"]] == [s["sha256"] for s in clean["shards"]]
  resumed = np.concatenate([np.load(p) for p in sorted(glob.glob(chunks))])
  uninterrupted = np.concatenate([np.load(p) for p in sorted(glob.glob(
      str(tmp_path / "clean" / ".work" / "cache" / "edm" / "chunk-*.npy")))])
  np.testing.assert_array_equal(resumed, uninterrupted)
  assert len({im.tobytes() for im in uninterrupted}) == 12
