"""README's first command, read from README.md and run as written with the network blocked.

The installation part (`pip install -e . &&`) is left out (the suite runs in the installed
environment), `python` is this interpreter, the model directory is a temporary one, and one gin
binding shortens the run to 12 steps (the full 600 take about 2 minutes on 2 cores, README);
everything else is the README's command. The network is blocked twice: a `sitecustomize` that
makes every Python socket connection raise (and records it), and, where the machine allows it, a
network namespace without any interface (`unshare -rn`).
"""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from rgd.runtime import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SITECUSTOMIZE = '''
import os, socket
def _refuse(*args, **kwargs):
  with open(os.environ["RGD_TEST_NETWORK_LOG"], "a") as f:
    f.write(repr(args[1:] or args) + "\\n")
  raise OSError("network blocked by the test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
'''


def readme_command_1():
  """The line of README's "Set up" that command 1 is, without its installation part."""
  text = open(os.path.join(ROOT, "README.md")).read()
  setup = text[text.index("## Set up"):text.index("## Quick start")]
  line = next(l for l in setup.splitlines() if l.startswith("pip install -e . && "))
  return line[len("pip install -e . && "):]


def _unshare_works():
  try:
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
  except OSError:
    return False


@pytest.mark.slow
def test_readme_command_1_runs_offline(tmp_path):
  command = readme_command_1()
  assert command.startswith("python -m rgd.train --gin_file=gin/quickstart.gin --model_dir=")
  args = shlex.split(command)
  model_dir = str(tmp_path / "run")
  args = [sys.executable] + [f"--model_dir={model_dir}" if a.startswith("--model_dir=") else a
                             for a in args[1:]]
  args.append("--gin_bindings=train_and_evaluate.num_steps=12")
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
  log = tmp_path / "network.log"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), ROOT]),
             RGD_TEST_NETWORK_LOG=str(log), TFDS_DATA_DIR=str(tmp_path / "no_tfds"))
  # The guard works: a connection attempt in this environment fails and is recorded.
  probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection("
                          "('example.com', 80))"], env=env, capture_output=True, text=True)
  assert probe.returncode != 0 and "network blocked" in probe.stderr
  log.unlink()
  if _unshare_works():
    args = ["unshare", "-rn"] + args
  done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert not log.exists(), log.read_text()     # no connection was even attempted
  for name in ("model.keras", "model.json", "last.keras", "operative_config.gin"):
    assert os.path.exists(os.path.join(model_dir, name)), name
  info = fileio.read_json(os.path.join(model_dir, "model.json"))
  assert info["dataset"] == "digits" and info["objective"] == "trades"
  assert abs(info["eps"] - 16 / 255) < 1e-9 and 0.0 <= info["robust_accuracy"] <= 1.0
  for sub in ("train", "validation"):
    assert glob.glob(os.path.join(model_dir, sub, "events.out.tfevents.*")), sub
  # The closing lines name the outputs and the next command, on this run's directory.
  assert f"model:  {model_dir}/model.keras" in done.stdout
  assert f"report: {model_dir}/model.json" in done.stdout
  assert re.search(rf"next: +python -m rgd.evaluate --model_dir={re.escape(model_dir)} "
                   r"--suite=autoattack", done.stdout), done.stdout
  # The run was TRADES with 70% Gaussian samples per batch (the operative config says so).
  config = open(os.path.join(model_dir, "operative_config.gin")).read()
  assert "GENERATED = 'gaussian'" in config
  assert "train_and_evaluate.generated_pattern = %GENERATED" in config
  assert "train_and_evaluate.mixing_ratio = 0.3" in config
  assert "Objective.kind = 'trades'" in config
