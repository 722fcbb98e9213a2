"""The corruption networks' reconstruction training lowers the loss on a tiny set, resumes, and
writes weights that load back; through the loop skeleton (rgd.runtime.loop) it stops cleanly on
SIGTERM, resumes to the uninterrupted run's weights bit for bit (also past a damaged newest
checkpoint) and writes the operative config and TensorBoard scalars; the gin files parse."""
import glob
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from rgd import errors
from rgd.corruptions import training as tcn
from rgd.corruptions import networks

from conftest import make_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("network,kwargs,loss,lr,factor", [
    ("edsr_cifar", {"num_blocks": 1, "features": 8}, "l1", 3e-3, 0.7),
    # The rounded 2x2x8 code limits what 40 steps can do: a smaller but clear drop.
    ("cae_cifar", {"features": (8, 8), "num_blocks": 1, "code_channels": 8}, "mse", 3e-3, 0.85)])
def test_reconstruction_loss_goes_down(tmp_path, network, kwargs, loss, lr, factor):
  images, _ = make_images(32, size=16)
  history = tcn.train_corruption_net(str(tmp_path), network, kwargs, None, batch_size=16,
                                     num_steps=40, learning_rate=lr, loss=loss, log_every=10,
                                     checkpoint_every=20, images=images)
  assert len(history) == 4 and history[-1] < factor * history[0], history
  net = networks.get_network(network, **kwargs)
  params = networks.load_params(str(tmp_path / "weights.npz"), net)
  x = images[:4].astype(np.float32) / 255
  err = lambda p: float(tcn.LOSSES[loss](net.apply(p, x), x))
  assert err(params) < err(net.init(0))  # the exported weights are the trained ones
  # Asking for more steps resumes from the last checkpoint (step 40), not from scratch.
  more = tcn.train_corruption_net(str(tmp_path), network, kwargs, None, batch_size=16,
                                  num_steps=50, learning_rate=lr, loss=loss, log_every=10,
                                  images=images)
  assert len(more) == 1 and more[0] < history[0]


def _state(model_dir):
  """weights.npz and the newest checkpoint's tensors (weights, Adam moments, step; the input
  iterator's state is a variant that the reader cannot return)."""
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
             if "_CHECKPOINTABLE_OBJECT_GRAPH" not in n and "save_counter" not in n
             and "iterator" not in n}
  with np.load(os.path.join(model_dir, "weights.npz")) as f:
    return {k: f[k] for k in f.files}, tensors


def _assert_same(a, b):
  for x, y in zip(a, b):
    assert x.keys() == y.keys() and len(x) > 3
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The runs of tests/corruption_net_check.py (its docstring), in one subprocess."""
  root = tmp_path_factory.mktemp("corruption")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "corruption_net_check.py"),
                           str(root)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(root / "histories.json") as f:
    return root, json.load(f), result.stderr


def test_run_writes_operative_config_and_tensorboard(runs):
  root, histories, _ = runs
  model_dir = root / "full"
  assert len(histories["full"]) == 6 and all(np.isfinite(histories["full"]))
  config = open(model_dir / "operative_config.gin").read()
  assert "train_corruption_net.loss = 'l1'" in config
  tags = {v.tag for f in glob.glob(str(model_dir / "train" / "events.out.tfevents.*"))
          for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value}
  assert {"loss", "learning_rate", "images_per_second", "operative_config"} <= tags
  assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-6")


def test_sigterm_checkpoints_and_resume_is_bit_exact(runs):
  root, histories, stderr = runs
  full = histories["full"]
  assert "Checkpointed at step 3 after SIGTERM; exiting." in stderr
  assert histories["cut_first"] == full[:3] and histories["cut_rest"] == full[3:]
  assert not histories["cut_weights_after_first"]   # exported only when the run is complete
  _assert_same(_state(root / "full"), _state(root / "cut"))


def test_resume_falls_back_past_a_damaged_checkpoint(runs):
  root, histories, stderr = runs
  assert f"Resumed from {root}/damaged/checkpoints/ckpt-4 instead of the damaged " \
         f"{root}/damaged/checkpoints/ckpt-6" in stderr
  assert histories["damaged"] == histories["full"][4:]   # steps 5 and 6 again
  _assert_same(_state(root / "full"), _state(root / "damaged"))


def test_load_params_names_a_mismatch(tmp_path):
  net = networks.EDSRCifar(num_blocks=1, features=4)
  networks.save_params(str(tmp_path / "w.npz"), net.init(0))
  with pytest.raises(ValueError, match="w.npz"):
    networks.load_params(str(tmp_path / "w.npz"), networks.EDSRCifar(num_blocks=2, features=4))
  with pytest.raises(errors.ConfigError, match="nope.npz"):
    networks.load_params(str(tmp_path / "nope.npz"), net)


@pytest.mark.parametrize("path", ["gin/edsr.gin", "gin/cae.gin"])
def test_gin_files_build_the_networks(path):
  gin.clear_config()
  try:
    gin.parse_config_file(path)
    kwargs = gin.query_parameter("train_corruption_net.network_kwargs")
    name = gin.query_parameter("train_corruption_net.network")
  finally:
    gin.clear_config()
  params = networks.get_network(name, **kwargs).init(0)
  n = sum(v.size for v in params.values())
  if name == "edsr_cifar":  # EDSR-baseline: head 3->64, 33 convs 64->64, tail 64->3 (3x3, biases)
    assert n == (27 * 64 + 64) + 33 * (9 * 64 * 64 + 64) + (9 * 64 * 3 + 3)
  else:  # CAE: 5x5 convs 3->64->128->96, 2 x 3 residual blocks of two 128->128 convs, decoder
    assert n == (75 * 64 + 64) + (25 * 64 * 128 + 128) + (25 * 128 * 96 + 96) + 12 * (
        9 * 128 * 128 + 128) + (9 * 96 * 512 + 512) + (9 * 128 * 256 + 256) + (9 * 64 * 12 + 12)
