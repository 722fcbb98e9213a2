"""Cloud-storage paths: every file access goes through tf.io.gfile (a lint over the sources), and
a whole run on TF's in-memory filesystem (`ram://`, which stands for gs:// here) writes nothing to
local disk."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Calls that bypass gfile when given a user path. A line that truly needs the local filesystem
# (a memory-mapped cache, a benchmark's scratch folder) says so with a '# local only' comment.
LOCAL_IO = re.compile(r"(?<![.\w])open\(|os\.path\.(exists|isfile|isdir|getsize)\(|os\.makedirs\(|"
                      r"glob\.glob\(|np\.load\(\s*[a-z_]*(path|name|file)|os\.replace\(|"
                      r"os\.listdir\(|os\.remove\(|shutil\.rmtree\(")


def _offending_lines():
  out = []
  for path in sorted(list((ROOT / "rgd").rglob("*.py")) + list((ROOT / "tools").glob("*.py"))):
    for n, line in enumerate(path.read_text().splitlines(), 1):
      code = line.split("#", 1)[0]
      if LOCAL_IO.search(code) and "# local only" not in line and not code.strip().startswith(
          ('"', "'")):
        out.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
  return out


def test_library_and_tools_use_gfile():
  assert _offending_lines() == []


def test_the_lint_catches_local_io(tmp_path, monkeypatch):
  assert LOCAL_IO.search("  with open(path) as f:")
  assert LOCAL_IO.search("os.makedirs(model_dir, exist_ok=True)")
  assert LOCAL_IO.search("files = glob.glob(pattern)")
  assert LOCAL_IO.search("np.load(path, allow_pickle=False)")
  assert not LOCAL_IO.search("np.load(io.BytesIO(data), allow_pickle=False)")
  assert not LOCAL_IO.search("tf.io.gfile.exists(path)")


_SCRIPT = r'''
import os, sys
import numpy as np
import tensorflow as tf
sys.path.insert(0, ROOT)
from rgd import cli
from rgd.data import datasets
from rgd.evaluation import adversarial, target
from rgd.training import loop
from rgd.runtime import fileio
from rgd.data import tfrecord
sys.path.insert(0, os.path.join(ROOT, "tests"))  # robustbench installs a top-level `tests` package
from conftest import make_images

x, y = make_images(96 + 32)
fileio.save_npz("ram://bucket/data/train.npz", image=x[:96], label=y[:96])
fileio.save_npz("ram://bucket/data/test.npz", image=x[96:], label=y[96:])
gx, gy = make_images(64, seed=1)
for i in range(2):
  tfrecord.write_shard(f"ram://bucket/gen/generated-{i:05d}-of-00002.tfrecord",
                       (tfrecord.serialize(gx[j], gy[j], None) for j in range(i * 32, i * 32 + 32)))

# The README's TPU/bucket commands, with ram:// for gs:// and the debug config.
import gin
gin.add_config_file_search_path(ROOT)  # gin/debug.gin includes 'gin/base.gin'
cli.parse_gin([os.path.join(ROOT, "gin/debug.gin")],
                ["DATASET='npz:ram://bucket/data'",
                 "train_and_evaluate.generated_pattern='ram://bucket/gen/generated-*.tfrecord'"])
strategy = tf.distribute.get_strategy()
loop.train_and_evaluate("ram://bucket/run", strategy)
for name in ("model.keras", "model.json", "last.keras", "operative_config.gin"):
  assert tf.io.gfile.exists("ram://bucket/run/" + name), name
assert tf.io.gfile.glob("ram://bucket/run/checkpoints/ckpt-*.index")
assert tf.io.gfile.glob("ram://bucket/run/train/events.out.tfevents.*")
assert not [n for n in tf.io.gfile.listdir("ram://bucket/run") if n.startswith(".tmp-")]

# rgd.evaluate --model_dir=ram://bucket/run: dataset, norm and eps come from the run.
run = target.run_defaults("ram://bucket/run")
dataset, norm, eps, data_dir, origin = target.resolve_target(run)
assert (dataset, norm, round(eps * 255, 6)) == ("npz:ram://bucket/data", "linf", 8.0), origin
model, path, step = target.load_model("ram://bucket/run")
images, labels = datasets.load_split(dataset, "test")
report = adversarial.evaluate_model(model, images[:16], labels[:16], "pgd40", norm, eps,
                                 batch_size=16, output_dir="ram://bucket/run/eval")
name = adversarial.report_name("pgd40", norm, eps)
for suffix in (".json", ".npz"):
  assert tf.io.gfile.exists("ram://bucket/run/eval/" + name + suffix), suffix
print("RAM-OK")
'''


def test_whole_run_on_ram_filesystem_writes_nothing_locally(tmp_path):
  """Data, generated shards, model directory, exports, checkpoints, summaries and the
  evaluation report all on ram://; the working directory stays empty."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", f"ROOT = {str(ROOT)!r}\n" + _SCRIPT], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and "RAM-OK" in result.stdout, result.stderr[-4000:]
  assert list(cwd.iterdir()) == []  # no 'ram:' folder, no stray export
  assert not (ROOT / "ram:").exists()


def test_evaluate_defaults_follow_the_run(tmp_path):
  from rgd.evaluation import target
  from rgd.runtime import fileio
  run_dir = str(tmp_path / "run")
  fileio.atomic_write_json(os.path.join(run_dir, "model.json"),
                           dict(dataset="cifar100", norm="l2", eps=0.5, objective="trades"))
  run = target.run_defaults(run_dir)
  assert target.resolve_target(run)[:3] == ("cifar100", "l2", 0.5)
  # Flags win; a standard run has no threat model, so the default one applies.
  assert target.resolve_target(run, norm="linf", eps="8/255")[:3] == (
      "cifar100", "linf", pytest.approx(8 / 255))
  assert target.resolve_target(dict(dataset="npz:D", objective="standard", norm="linf",
                                      eps=0.1))[:3] == ("npz:D", "linf", pytest.approx(8 / 255))
  assert target.resolve_target({})[:3] == ("cifar10", "linf", pytest.approx(8 / 255))
