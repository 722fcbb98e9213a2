"""The real entry point, run as users run it: end to end, resume after SIGKILL, SIGTERM, and
bad configuration. Each run is a subprocess on a tiny npz data set written by the test."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_DETERMINISTIC_OPS="1",
           CUDA_VISIBLE_DEVICES="")


def _cmd(model_dir, data_dir, *bindings, gin_file="gin/debug.gin"):
  cmd = [sys.executable, "-m", "rgd.train", f"--gin_file={gin_file}", f"--model_dir={model_dir}",
         f"--gin_bindings=DATASET='npz:{data_dir}'"]
  return cmd + [f"--gin_bindings={b}" for b in bindings]


def _run(cmd, timeout=300, env=None):
  return subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True,
                        timeout=timeout)


def _latest_step(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  return int(path.rsplit("-", 1)[1]) if path else 0


def _checkpoint_tensors(model_dir):
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  names = [n for n in reader.get_variable_to_shape_map()
           if "save_counter" not in n and "iterator" not in n and "OPTIMIZER_SLOT" not in n
           and "_CHECKPOINTABLE_OBJECT_GRAPH" not in n]
  return {n: reader.get_tensor(n) for n in names}


def test_debug_run_end_to_end(npz_dataset, tmp_path, capfd, caplog, monkeypatch):
  """The real `python -m rgd.train` process; the rerun that resumes runs its main in this
  process (conftest.run_main)."""
  model_dir = str(tmp_path / "run")
  result = _run(_cmd(model_dir, npz_dataset))
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("model.keras", "model.json", "last.keras", "operative_config.gin"):
    assert os.path.exists(os.path.join(model_dir, name)), name
  assert _latest_step(model_dir) == 6
  assert glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
  assert glob.glob(os.path.join(model_dir, "validation", "events.out.tfevents.*"))
  assert "Objective.kind = 'trades'" in open(os.path.join(model_dir, "operative_config.gin")).read()
  # model.json records the objective's threat (what rgd.evaluate defaults to).
  info = json.load(open(os.path.join(model_dir, "model.json")))
  assert info["objective"] == "trades" and info["norm"] == "linf"
  assert info["threat"] == {"norm": "linf", "eps": info["eps"]} and 0 < info["eps"] <= 1
  assert "ETA" in result.stderr and "validation: clean" in result.stderr
  # No temporary files are left behind by the atomic writes.
  assert not glob.glob(os.path.join(model_dir, ".tmp-*"))
  import keras
  model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
  x = np.load(os.path.join(npz_dataset, "test.npz"))["image"][:4].astype(np.float32) / 255
  logits = model.predict(x, verbose=0)
  assert logits.shape == (4, 10) and logits.dtype == np.float32
  assert np.isfinite(logits).all()
  # The TensorBoard events hold the image grid and the operative config.
  tags = set()
  for f in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(f):
      tags.update(v.tag for v in event.summary.value)
  assert {"loss", "kl", "learning_rate", "images_per_second", "operative_config",
          "clean_adversarial_difference"} <= tags
  # Running again resumes from the final checkpoint and trains no further.
  from rgd import train  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  caplog.set_level("INFO")
  code = run_main(train.main, "rgd.train", ["rgd.train"] + _cmd(model_dir, npz_dataset)[3:])
  assert code == 0, capfd.readouterr().err[-3000:]
  assert "Resumed from" in caplog.text
  assert _latest_step(model_dir) == 6


RESUME_STEPS = 16
RESUME_BINDINGS = [f"train_and_evaluate.num_steps={RESUME_STEPS}",
                   "train_and_evaluate.checkpoint_every=1", "train_and_evaluate.eval_every=0",
                   "train_and_evaluate.image_summary_every=0", "train_and_evaluate.log_every=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(data dir, model dir) of one uninterrupted run, shared by the interruption tests."""
  from conftest import write_npz_dataset
  root = tmp_path_factory.mktemp("uninterrupted")
  data_dir = write_npz_dataset(str(root / "data"))
  model_dir = str(root / "full")
  result = _run(_cmd(model_dir, data_dir, *RESUME_BINDINGS))
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir, model_dir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_identical_weights(uninterrupted, tmp_path, sig):
  """N steps uninterrupted vs. interrupted after >= 3 steps and resumed to N: identical model,
  average, optimizer and step (exactly: deterministic ops on CPU). SIGTERM must also exit 0
  after writing a checkpoint of the step it reached."""
  npz_dataset, full = uninterrupted
  n, bindings = RESUME_STEPS, RESUME_BINDINGS
  cut = str(tmp_path / "cut")
  proc = subprocess.Popen(_cmd(cut, npz_dataset, *bindings), cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while _latest_step(cut) < 3 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(sig)
  output = proc.communicate(timeout=120)[0]
  stopped_at = _latest_step(cut)
  assert 3 <= stopped_at < n, f"not interrupted mid-run (step {stopped_at})"
  if sig == signal.SIGTERM:
    assert proc.returncode == 0, output[-3000:]
    assert f"Checkpointed at step {stopped_at} after SIGTERM" in output
  else:
    assert proc.returncode == -signal.SIGKILL
  result = _run(_cmd(cut, npz_dataset, *bindings))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from" in result.stderr
  a, b = _checkpoint_tensors(full), _checkpoint_tensors(cut)
  assert a.keys() == b.keys() and len(a) > 20
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# The exit status of a bad configuration through the real entry point (2, one line naming the
# culprit): tests/test_exit_statuses.py::test_real_exit_status[rgd.train] (a bad gin binding; a
# missing gin file takes the same ConfigError path, and its message "rgd.train: gin file not
# found: ..." is checked in process there). The messages, in process below.


@pytest.mark.parametrize("files,bindings,message", [
    (["gin/nope.gin"], [], "gin file not found: gin/nope.gin"),
    (["gin/debug.gin"], ["train_and_evaluate.batch_sise=3"], "batch_sise"),
    (["gin/debug.gin"], ["nothing.here=3"], "nothing.here"),
])
def test_bad_configuration_names_the_culprit(files, bindings, message):
  import gin  # pylint: disable=g-import-not-at-top
  from rgd import cli, errors  # pylint: disable=g-import-not-at-top
  import rgd.train  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (configurables)
  gin.clear_config()
  cwd = os.getcwd()
  os.chdir(ROOT)  # gin files include each other by repository-relative paths
  try:
    with pytest.raises(errors.ConfigError, match=message):
      cli.parse_gin(files, bindings)
  finally:
    os.chdir(cwd)
    gin.clear_config()


def test_bad_data_names_the_file(tmp_path):
  """The message names the file and the record (the exit status of a DataError, 2, is checked
  through the entry point by tests/test_faults_data.py)."""
  from rgd.data import datasets  # pylint: disable=g-import-not-at-top
  from rgd.errors import DataError  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "bad"
  folder.mkdir()
  np.savez(folder / "train.npz", image=np.zeros((64, 32, 32, 3), np.uint8),
           label=np.full(64, 12))
  with pytest.raises(DataError, match=f"{folder}/train.npz: label 12 out of range \\[0, 10\\)"):
    datasets.load_split(f"npz:{folder}", "train", 10)


def test_diverging_run_stops_at_first_nonfinite_step_and_saves_nothing_bad(npz_dataset,
                                                                          tmp_path):
  """base_learning_rate=1e12 (a diverging run): exit status 3 naming the step; no export, and every
  checkpoint on disk holds finite weights."""
  model_dir = str(tmp_path / "run")
  result = _run(_cmd(model_dir, npz_dataset, "learning_rate_schedule.base_learning_rate=1e12"))
  assert result.returncode == 3, result.stderr[-3000:]
  assert "rgd.train: step " in result.stderr and "non-finite" in result.stderr
  assert "Last good checkpoint" in result.stderr
  for name in ("model.keras", "last.keras", "model.json", "last.json"):
    assert not os.path.exists(os.path.join(model_dir, name)), name
  if _latest_step(model_dir):
    for name, value in _checkpoint_tensors(model_dir).items():
      if np.issubdtype(np.asarray(value).dtype, np.floating):
        assert np.isfinite(value).all(), name


def test_resume_falls_back_past_a_truncated_latest_checkpoint(uninterrupted, tmp_path):
  """The newest checkpoint's data file truncated (a partial copy): the run warns, resumes from
  the one before, and ends with the weights of the uninterrupted run."""
  import shutil
  npz_dataset, full = uninterrupted
  damaged = str(tmp_path / "damaged")
  shutil.copytree(full, damaged)
  data_file, = glob.glob(os.path.join(damaged, "checkpoints", f"ckpt-{RESUME_STEPS}.data-*"))
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 3)
  result = _run(_cmd(damaged, npz_dataset, *RESUME_BINDINGS))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resumed from {damaged}/checkpoints/ckpt-{RESUME_STEPS - 1} instead of the damaged " \
         f"{damaged}/checkpoints/ckpt-{RESUME_STEPS}" in result.stderr
  a, b = _checkpoint_tensors(full), _checkpoint_tensors(damaged)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _keras_weights(path):
  import keras
  return keras.saving.load_model(path).get_weights()


def test_kills_during_checkpoint_write_and_export_resume_to_identical_weights(uninterrupted,
                                                                              tmp_path):
  """SIGKILL at chosen points (rgd.runtime.faults): after ckpt-5's files are written but before the
  `checkpoint` state file lists them, then after last.keras is written under its temporary name
  but before the rename. Neither leaves a half-written state or export that is used or
  visible, and the resumed run ends with the uninterrupted run's checkpoint and export."""
  npz_dataset, full = uninterrupted
  cut = str(tmp_path / "cut")
  killed = _run(_cmd(cut, npz_dataset, *RESUME_BINDINGS),
                env=dict(ENV, RGD_KILL_AT="checkpoint:5"))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert "RGD_KILL_AT=checkpoint:5" in killed.stderr
  assert os.path.exists(os.path.join(cut, "checkpoints", "ckpt-5.index"))  # written, not listed
  assert _latest_step(cut) == 4

  killed = _run(_cmd(cut, npz_dataset, *RESUME_BINDINGS),
                env=dict(ENV, RGD_KILL_AT="export:last.keras"))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert f"Resumed from {cut}/checkpoints/ckpt-4" in killed.stderr
  assert _latest_step(cut) == RESUME_STEPS
  assert glob.glob(os.path.join(cut, ".tmp-*.keras"))  # the export, not yet renamed
  for name in ("last.keras", "model.keras", "last.json", "model.json"):
    assert not os.path.exists(os.path.join(cut, name)), name

  result = _run(_cmd(cut, npz_dataset, *RESUME_BINDINGS))
  assert result.returncode == 0, result.stderr[-3000:]
  assert not glob.glob(os.path.join(cut, ".tmp-*"))
  a, b = _checkpoint_tensors(full), _checkpoint_tensors(cut)
  assert a.keys() == b.keys() and len(a) > 20
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  for name in ("last.keras", "model.keras"):
    for x, y in zip(_keras_weights(os.path.join(full, name)),
                    _keras_weights(os.path.join(cut, name))):
      np.testing.assert_array_equal(x, y, err_msg=name)
