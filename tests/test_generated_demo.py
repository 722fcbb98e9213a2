"""The generated-data demo (docs/generated_data.md, gin/demo.gin) end to end at tiny sizes, with
the real entry points: Gaussian generator -> pseudo-labels -> TFRecords (tools/make_tfrecords.py,
a process: its flags would clash with rgd's in one process) -> TRADES training with 70% generated
images per batch -> evaluation (rgd.train's and rgd.evaluate's mains in this process,
conftest.run_main; their processes start in tests/test_exit_statuses.py)."""
import glob
import importlib
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np

from conftest import run_main, write_npz_dataset
from rgd.models import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capfd, prog, *args):
  code = run_main(importlib.import_module(prog).main, prog, [prog, *args])
  out, err = capfd.readouterr()
  assert code == 0, err[-3000:]
  return out


def _run_tool(*cmd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]


def test_demo_end_to_end(tmp_path, capfd, monkeypatch):
  monkeypatch.chdir(ROOT)  # gin files are named from the repository root, as in the docs
  data_dir = write_npz_dataset(str(tmp_path / "data"), num_train=256, num_test=64)
  # A tiny pseudo-labeller, trained in-process (the docs train it with rgd.train and
  # Objective.kind='standard'; that entry point has its own end-to-end test).
  with np.load(os.path.join(data_dir, "train.npz")) as f:
    x, y = f["image"].astype(np.float32) / 255, f["label"]
  keras.utils.set_random_seed(0)  # conftest turns on deterministic ops, which need a seed.
  labeler = get_model("tiny_cnn", num_classes=10, width=4)
  labeler.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  labeler.fit(x, y, batch_size=32, epochs=2, verbose=0)
  labeler_path = str(tmp_path / "labeler.keras")
  labeler.save(labeler_path)

  gen_dir = str(tmp_path / "gaussian")
  _run_tool("tools/make_tfrecords.py", "--generator=gaussian", f"--dataset=npz:{data_dir}",
       "--num_per_class=12", f"--labeler={labeler_path}", "--keep_per_class=8",
       "--examples_per_shard=20", f"--output_dir={gen_dir}")
  with open(os.path.join(gen_dir, "metadata.json")) as f:
    meta = json.load(f)
  assert meta["source"]["kind"] == "gaussian"
  assert sum(meta["labelled_per_class"]) == 120
  assert all(c <= 8 for c in meta["counts_per_class"])
  assert meta["num_examples"] == sum(meta["counts_per_class"]) > 0
  pattern = os.path.join(gen_dir, "generated-*.tfrecord")
  assert len(glob.glob(pattern)) == len(meta["shards"])

  model_dir = str(tmp_path / "robust")
  _run(capfd, "rgd.train", "--gin_file=gin/demo.gin", f"--model_dir={model_dir}",
       f"--gin_bindings=DATASET='npz:{data_dir}'", f"--gin_bindings=GENERATED='{pattern}'",
       "--gin_bindings=train_and_evaluate.num_steps=4",
       "--gin_bindings=train_and_evaluate.checkpoint_every=4")
  config = open(os.path.join(model_dir, "operative_config.gin")).read()
  config = re.sub(r"\\\s*\n\s*", "", config)  # gin wraps long values with "\" + newline
  assert f"GENERATED = '{pattern}'" in config
  assert "train_and_evaluate.generated_pattern = %GENERATED" in config
  assert "train_and_evaluate.mixing_ratio = 0.3" in config

  out = _run(capfd, "rgd.evaluate", f"--model_dir={model_dir}", f"--dataset=npz:{data_dir}",
             "--suite=pgd40", "--num_examples=16", "--batch_size=16")
  reports = glob.glob(os.path.join(model_dir, "eval", "*.json"))
  assert len(reports) == 1, out
  with open(reports[0]) as f:
    report = json.load(f)
  assert report["num_examples"] == 16
  assert 0.0 <= report["robust_accuracy"] <= report["clean_accuracy"] <= 1.0
