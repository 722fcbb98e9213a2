"""tools/study.py on a 2 x 2 grid (real only and the on-the-fly Gaussian, two seeds) of a few
steps each: the results are written, each cell's number is its run's own report, and a rerun
after a kill mid-grid skips the finished cells."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "study.py")
TINY = ["train_and_evaluate.num_steps=3", "get_model.width=4", "train_and_evaluate.eval_every=3",
        "train_and_evaluate.checkpoint_every=3", "train_and_evaluate.image_summary_every=0",
        "train_and_evaluate.log_every=3"]


def _command(out):
  return [sys.executable, TOOL, f"--output_dir={out}", "--generators=none,gaussian",
          "--real_shares=0.3", "--seeds=0,1", "--suite=pgd40", "--num_test=40",
          "--heldout_fraction=0", "--num_validation=50"] + [
              f"--gin_bindings={b}" for b in TINY]


def _results(out):
  try:
    with open(os.path.join(out, "results.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@pytest.mark.slow
def test_grid_results_reports_and_resume_after_a_kill(tmp_path):
  out = str(tmp_path / "study")
  env = dict(os.environ, PYTHONPATH=ROOT)
  first = subprocess.Popen(_command(out), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + 400
  while time.time() < deadline and first.poll() is None:
    r = _results(out)
    if r and r["num_finished"] >= 1:
      break
    time.sleep(0.2)
  assert first.poll() is None, "the grid finished before it could be killed"
  first.send_signal(signal.SIGKILL)
  first.wait()
  partial = _results(out)
  assert partial["partial"] and 1 <= partial["num_finished"] < 4
  finished = [c["name"] for c in partial["cells"] if c["robust_accuracy"] is not None]
  assert finished[0] == "none_real100_seed0"
  mtimes = {c["name"]: os.path.getmtime(os.path.join(out, c["report"]))
            for c in partial["cells"] if c["report"]}

  again = subprocess.run(_command(out), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  for name in finished:
    assert f"skip {name}" in again.stdout
  for name, mtime in mtimes.items():       # finished reports were not rewritten
    cell = next(c for c in _results(out)["cells"] if c["name"] == name)
    assert os.path.getmtime(os.path.join(out, cell["report"])) == mtime

  result = _results(out)
  assert not result["partial"] and result["num_finished"] == result["num_cells"] == 4
  assert [c["name"] for c in result["cells"]] == [
      "none_real100_seed0", "gaussian_real030_seed0", "none_real100_seed1",
      "gaussian_real030_seed1"]
  for c in result["cells"]:   # each cell's numbers are its run's own evaluation report
    with open(os.path.join(out, c["report"])) as f:
      report = json.load(f)
    assert report["suite"] == "pgd40" and report["num_examples"] == 40
    assert c["robust_accuracy"] == report["robust_accuracy"]
    assert c["clean_accuracy"] == report["clean_accuracy"]
    with open(os.path.join(out, "runs", c["name"], "model.json")) as f:
      assert f.read()  # the run's own export
    config = open(os.path.join(out, "runs", c["name"], "operative_config.gin")).read()
    assert f"train_and_evaluate.seed = {c['seed']}" in config
  # Means and standard deviations over the two seeds, by hand.
  for g in ("none", "gaussian"):
    robust = [c["robust_accuracy"] for c in result["cells"] if c["generator"] == g]
    row = next(r for r in result["summary"] if r["generator"] == g)
    assert row["n"] == 2 and row["robust_mean"] == pytest.approx(np.mean(robust))
    assert row["robust_std"] == pytest.approx(np.std(robust, ddof=1))
  gauss = next(r for r in result["summary"] if r["generator"] == "gaussian")
  base = next(r for r in result["summary"] if r["generator"] == "none")
  assert gauss["robust_delta"] == pytest.approx(gauss["robust_mean"] - base["robust_mean"])
  comp = result["complementarity"]["gaussian"]
  assert comp["c_train"] + comp["c_test"] + comp["c_self"] == pytest.approx(1.0)
  table = open(os.path.join(out, "results.md")).read()
  assert "| gaussian | 30% |" in table and "| none | 100% |" in table
  assert "Partial" not in table
  with open(os.path.join(out, "figure.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_edm_generator_end_to_end(tmp_path):
  """`edm`: rgd.train_generator on the labelled images, sampled and pseudo-labelled by
  tools/make_tfrecords.py, mixed into a run (a 3-step EDM: the path, not a useful generator)."""
  out = str(tmp_path / "study")
  command = [sys.executable, TOOL, f"--output_dir={out}", "--generators=edm:0.5",
             "--seeds=0", "--suite=pgd40", "--num_test=20", "--heldout_fraction=0.9",
             "--num_validation=50", "--edm_images=30", "--edm_sample_steps=2",
             "--complementarity_samples=30"] + [f"--gin_bindings={b}" for b in TINY] + [
                 f"--edm_bindings=train_generator.{b}" for b in (
                     "num_steps=2", "sample_every=0", "checkpoint_every=2", "augment_p=0")]
  done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=1500)
  assert done.returncode == 0, done.stderr[-3000:]
  edm = os.path.join(out, "generators", "edm")
  with open(os.path.join(edm, "model", "generator.json")) as f:
    assert json.load(f)["step"] == 2
  with open(os.path.join(edm, "records", "metadata.json")) as f:
    meta = json.load(f)
  assert meta["num_examples"] == 30
  # The generator saw the labelled images only: 10% of the 1,150 training images.
  with open(os.path.join(out, "data", "data.json")) as f:
    assert json.load(f)["num_labelled"] == 115
  config = open(os.path.join(out, "runs", "edm_real050_seed0", "operative_config.gin")).read()
  assert meta["pattern"] in config and "train_and_evaluate.mixing_ratio = 0.5" in config
  result = _results(out)
  assert not result["partial"] and result["cells"][0]["name"] == "edm_real050_seed0"
  assert result["complementarity"]["edm"]["num_generated"] == 30
