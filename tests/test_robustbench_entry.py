"""RobustBench-style result fields beside an AutoAttack report."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from rgd.evaluation import adversarial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_entry_fields_as_robustbench_writes_them():
  report = dict(suite="autoattack", norm="linf", eps=8 / 255, clean_accuracy=0.92234,
                robust_accuracy=0.66578, num_examples=10000)
  assert adversarial.robustbench_entry(report, "WideResNet-70-16", "cifar10") == dict(
      dataset="cifar10", threat_model="Linf", architecture="WideResNet-70-16", eps="8/255",
      clean_acc="92.23", autoattack_acc="66.58", number_forward_passes=1, n_examples=10000)
  l2 = adversarial.robustbench_entry(dict(report, norm="l2", eps=0.5), "x", "cifar100")
  assert l2["threat_model"] == "L2" and l2["eps"] == "0.5"
  assert [adversarial.architecture_name(n) for n in
          ("wrn-28-10", "wrn28_10", "dm_preact_resnet18", "preact_resnet18", "tiny")] == [
              "WideResNet-28-10", "WideResNet-28-10", "PreActResNet-18", "PreActResNet-18",
              "tiny"]


@pytest.mark.slow
def test_autoattack_run_writes_the_entry(tmp_path):
  # A constant classifier (always class 0) on labels [1, 3]: clean and AutoAttack accuracy are
  # exactly 0 (the attacks have no point left to attack, which keeps the test short).
  model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(10)])
  model.layers[-1].set_weights([np.zeros((3, 10), np.float32),
                                5 * np.eye(10, dtype=np.float32)[0]])
  run = tmp_path / "run"
  os.makedirs(run)
  model.save(run / "model.keras")
  (run / "model.json").write_text(json.dumps(dict(architecture="wrn-28-10", dataset="cifar10",
                                                  norm="linf", eps=8 / 255)))
  data = tmp_path / "data"
  os.makedirs(data)
  x = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  np.savez(data / "train.npz", image=x, label=np.array([1, 3]))
  np.savez(data / "test.npz", image=x, label=np.array([1, 3]))
  proc = subprocess.run(
      [sys.executable, "-m", "rgd.evaluate", f"--model_dir={run}", "--suite=autoattack",
       f"--dataset=npz:{data}", "--batch_size=2"], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  entry = json.loads((run / "eval" / "eval_autoattack_linf_0.0313725.robustbench.json")
                     .read_text())
  assert entry == dict(dataset=f"npz:{data}", threat_model="Linf",
                       architecture="WideResNet-28-10", eps="8/255", clean_acc="0.00",
                       autoattack_acc="0.00", number_forward_passes=1, n_examples=2)
