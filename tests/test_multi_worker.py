"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (tests/multi_worker_check.py
is one worker): identical weights, exact real/generated counts per global batch, chief-only
exports and summaries, non-chief checkpoints in a deleted temporary directory, a worker
killed mid-run resuming from the last checkpoint with the uninterrupted run's weights, and a
SIGTERM to one worker stopping both at one step with one checkpoint."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_images, write_npz_dataset

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "multi_worker_check.py")
TIMEOUT = 120  # a hung collective must not stall CI


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ",".join(map(str, ports))


def _start(task, ports, model_dir, data_dir, out, env=None):
  return subprocess.Popen(
      [sys.executable, SCRIPT, str(task), ports, model_dir, data_dir,
       os.path.join(data_dir, "gen-*.tfrecord"), out],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))


def _finish(procs):
  logs = []
  deadline = time.time() + TIMEOUT
  for p in procs:
    try:
      logs.append(p.communicate(timeout=max(1, deadline - time.time()))[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-worker run timed out (hung collective?)")
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _run(model_dir, data_dir, outs):
  ports = _free_ports(2)
  return _finish([_start(i, ports, model_dir, data_dir, outs[i]) for i in range(2)])


def _weights(out, trainable_only=False):
  with np.load(out + ".npz") as f:
    return [f[k] for k in sorted(f.files) if not trainable_only or k.endswith("_t")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from rgd.data import tfrecord  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path_factory.mktemp("mw_data"))
  write_npz_dataset(folder, num_train=64, num_test=16)
  x, y = make_images(64, seed=3)
  for i in range(2):
    tfrecord.write_shard(os.path.join(folder, f"gen-{i}.tfrecord"),
                         [tfrecord.serialize(a, int(b)) for a, b in zip(x[i::2], y[i::2])])
  return folder


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  base = str(tmp_path_factory.mktemp("mw_run"))
  model_dir, outs = os.path.join(base, "model"), [os.path.join(base, f"w{i}") for i in range(2)]
  _run(model_dir, data_dir, outs)
  return model_dir, outs


@pytest.mark.slow
def test_two_workers_agree_and_only_the_chief_writes(uninterrupted):
  model_dir, outs = uninterrupted
  # Trainable weights bit-identical; BatchNorm moving statistics are each worker's own.
  w0, w1 = _weights(outs[0], True), _weights(outs[1], True)
  assert len(w0) == 22
  for a, b in zip(w0, w1):
    np.testing.assert_array_equal(a, b)
  info = [json.load(open(o + ".json")) for o in outs]  # pylint: disable=consider-using-with
  assert [i["pipelines"] for i in info] == [[2, 0], [2, 1]]
  assert [i["chief"] for i in info] == [True, False]
  assert all(i["num_replicas"] == 2 and i["worker_batch"] == 4 for i in info)
  # Global batch 8, mixing ratio 0.25: exactly 2 real and 6 generated examples in every batch.
  assert [a + b for a, b in zip(info[0]["real_per_batch"], info[1]["real_per_batch"])] == [2] * 6
  # Chief-only outputs; one train/ events file (the chief's) and no non-chief checkpoint left.
  for name in ("model.keras", "last.keras", "operative_config.gin", "last.json"):
    assert os.path.exists(os.path.join(model_dir, name)), name
  assert len(os.listdir(os.path.join(model_dir, "train"))) == 1
  ckpt = os.path.join(model_dir, "checkpoints")
  assert not any(n.startswith(".worker_") for n in os.listdir(ckpt)), os.listdir(ckpt)
  assert sorted(n for n in os.listdir(ckpt) if n.endswith(".index")) == [
      "ckpt-2.index", "ckpt-4.index", "ckpt-6.index"]
  for i in range(2):
    assert os.path.exists(os.path.join(ckpt, f"input_pipeline_{i}", "ckpt-6.index"))
  # Training moved the weights (the checks above are not about a no-op).
  assert max(float(np.abs(a).max()) for a in w0) > 0


@pytest.mark.slow
def test_sigterm_to_one_worker_then_a_lost_host_resume_to_the_uninterrupted_weights(
    uninterrupted, data_dir, tmp_path):
  """One run through both interruptions (each restart of two workers costs ~20 s):
  1. worker 1 alone gets SIGTERM after step 3 (checkpoints are every 2 steps): both workers
     agree on it after that step, write one checkpoint ckpt-3 (with each one's input state) and
     exit 0;
  2. restarted, both resume from ckpt-3; worker 1 then exits hard right after checkpoint 4 and
     the chief, blocked in the next collective, is killed too: a host lost mid-run;
  3. restarted again, both resume from ckpt-4 and end exactly where the uninterrupted run
     ended."""
  model_dir, outs = str(tmp_path / "model"), [str(tmp_path / f"w{i}") for i in range(2)]
  ports = _free_ports(2)
  procs = [_start(0, ports, model_dir, data_dir, outs[0]),
           _start(1, ports, model_dir, data_dir, outs[1],
                  env={"RGD_TEST_PAUSE_AFTER_STEP": "3"})]
  deadline = time.time() + TIMEOUT
  while not os.path.exists(outs[1] + ".ready"):
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail("worker 1 never reached step 3:\n" + procs[1].communicate()[0][-3000:])
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  logs = _finish(procs)  # both exit 0
  assert "Received signal 15" in logs[1] and "Received signal" not in logs[0], logs[0][-3000:]
  for log in logs:
    assert "SIGTERM on worker(s) 1: all 2 workers checkpoint this step and stop." in log
    assert "Checkpointed at step 3 after SIGTERM; exiting." in log, log[-3000:]
  ckpt = os.path.join(model_dir, "checkpoints")
  assert sorted(n for n in os.listdir(ckpt) if n.endswith(".index")) == [
      "ckpt-2.index", "ckpt-3.index"]
  with open(os.path.join(ckpt, "checkpoint")) as f:
    assert 'model_checkpoint_path: "ckpt-3"' in f.read()
  for i in range(2):
    assert sorted(os.listdir(os.path.join(ckpt, f"input_pipeline_{i}"))) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
        "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
  assert not any(n.startswith(".worker_") for n in os.listdir(ckpt)), os.listdir(ckpt)
  assert not os.path.exists(os.path.join(model_dir, "last.keras"))
  # The weights each worker saved at step 3 are the same (trainable ones, bit for bit).
  for a, b in zip(_weights(outs[0], True), _weights(outs[1], True)):
    np.testing.assert_array_equal(a, b)

  ports = _free_ports(2)
  procs = [_start(0, ports, model_dir, data_dir, outs[0]),
           _start(1, ports, model_dir, data_dir, outs[1],
                  env={"RGD_TEST_DIE_AFTER_CHECKPOINT": "4"})]
  log1 = procs[1].communicate(timeout=TIMEOUT)[0]
  assert procs[1].returncode == 17, log1[-3000:]
  assert "ckpt-3 at step 3" in log1, log1[-3000:]
  index = os.path.join(ckpt, "checkpoint")
  deadline = time.time() + 30
  while time.time() < deadline and not (
      os.path.exists(index) and "ckpt-4" in open(index).read()):  # pylint: disable=consider-using-with
    time.sleep(0.2)
  procs[0].send_signal(signal.SIGKILL)
  procs[0].communicate()
  assert not os.path.exists(os.path.join(model_dir, "last.keras"))

  logs = _run(model_dir, data_dir, outs)
  for log in logs:
    assert "Resumed from" in log and "ckpt-4 at step 4" in log, log[-3000:]
  for a, b in zip(_weights(outs[0]), _weights(uninterrupted[1][0])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(_weights(outs[1], True), _weights(uninterrupted[1][1], True)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
  """tests/distributed_check.py once for both tests below: two TRADES steps on one global batch
  under the default strategy and under MirroredStrategy on 2 logical CPUs (its stdout), and the
  mirrored run's weights (an .npz)."""
  path = str(tmp_path_factory.mktemp("mirrored") / "mirrored.npz")
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "distributed_check.py"),
                           path], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                   TF_DETERMINISTIC_OPS="1"), check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout, path


def test_mirrored_two_replicas_equals_default_strategy(mirrored):
  """The same global batch gives the same update under MirroredStrategy (2 logical CPUs) as
  under the default strategy: loss scaling, gradient all-reduce, weight decay counted once,
  attack starts independent of the split, EMA in cross-replica context. (Was
  tests/test_distributed.py, which ran distributed_check.py a second time.)"""
  stdout, _ = mirrored
  moved = float(re.search(r"max_weight_change (\S+)", stdout).group(1))
  diff = float(re.search(r"max_weight_diff (\S+)", stdout).group(1))
  losses = re.search(r"loss_single (\S+) loss_mirrored (\S+)", stdout)
  # The steps really changed the weights, by far more than the tolerance.
  assert moved > 1e-2
  # Tolerance: float32 summation order of the all-reduce (two partial sums instead of one).
  assert diff < 1e-5, stdout
  assert abs(float(losses.group(1)) - float(losses.group(2))) < 1e-4


@pytest.mark.slow
def test_two_workers_give_the_update_of_one_process_with_two_replicas(mirrored, tmp_path):
  """Two TRADES steps on one global batch of 8 (distributed_check.py's BN-free model): 2 worker
  processes x 1 replica, each fed its half, end with exactly the weights (and weight average)
  of 1 process x 2 replicas (MirroredStrategy on 2 logical CPUs). The all-reduce of two
  gradients is a sum of two terms either way, the attack's random start is drawn for the global
  batch and sliced by replica id, and the decay term is split 1/R per replica, so nothing
  differs. (With BatchNorm, each replica's statistics come from its own rows in both set-ups.)"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  _, mirrored = mirrored
  ports = _free_ports(2)
  script = os.path.join(ROOT, "tests", "multi_worker_step_check.py")
  outs = [str(tmp_path / f"w{i}.npz") for i in range(2)]
  _finish([subprocess.Popen([sys.executable, script, str(i), ports, outs[i]], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)])
  with np.load(mirrored) as m, np.load(outs[0]) as a, np.load(outs[1]) as b:
    assert m.files == a.files == b.files
    for k in m.files:
      np.testing.assert_array_equal(a[k], m[k], err_msg=k)
      np.testing.assert_array_equal(b[k], m[k], err_msg=k)
