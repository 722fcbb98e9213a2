"""Training from published or earlier weights (`train_and_evaluate.init_checkpoint`),
and exports that plain Keras loads: the network and its weight average start from exactly the
file's weights; the model.keras a run writes loads in a process that never imports rgd."""
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_main, write_npz_dataset
from rgd import models
from rgd.errors import ConfigError
from rgd.runtime import checkpointing
from rgd.runtime import nan_policy
from rgd.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _perturbed(name, seed, **kw):
  """A model whose every variable differs from a fresh build (BN variances stay positive)."""
  model = models.get_model(name, **kw)
  rng = np.random.RandomState(seed)
  model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                     if "moving_variance" in v.path or "gamma" in v.path
                     else w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                     for w, v in zip(model.get_weights(), model.weights)])
  return model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A run directory holding an exported WRN-10-1 (model.keras) and its weights by name."""
  folder = str(tmp_path_factory.mktemp("source"))
  model = _perturbed("wrn-10-1", 0)
  checkpointing.export_keras(model, os.path.join(folder, "model.keras"))
  return folder, {v.path: v.numpy() for v in model.weights}


def _state(init_checkpoint, **model_kw):
  gin.clear_config()
  gin.bind_parameter("get_model.name", model_kw.pop("name", "wrn-10-1"))
  for k, v in model_kw.items():
    gin.bind_parameter(f"get_model.{k}", v)
  inputs = loop.Input(None, np.zeros((8, 32, 32, 3), np.uint8), None, 10, 10, 1.0, 1, 0)
  try:
    config = loop.StateConfig(batch_size=8, init_checkpoint=init_checkpoint)
    return loop.create_train_state(tf.distribute.get_strategy(), inputs, config,
                                   nan_policy.NanPolicy("stop", 10))
  finally:
    gin.clear_config()


def test_network_and_average_start_from_the_file(source):
  folder, weights = source
  state = _state(folder)
  for model in (state.network, state.avg_network):
    assert {v.path for v in model.weights} == set(weights)
    for v in model.weights:
      np.testing.assert_array_equal(v.numpy(), weights[v.path])
  assert int(state.optimizer.iterations.numpy()) == 0  # a fresh optimizer
  fresh = _state(None)  # without it: the gin model's own initialisation
  assert not np.array_equal(fresh.network.weights[0].numpy(), weights["stem_conv/kernel"])


def test_a_different_architecture_is_named(source):
  folder, _ = source
  # Keras writes swish as its alias 'silu'.
  with pytest.raises(ConfigError, match="group0_block0_act1: {'activation': 'silu'}.*relu"):
    _state(folder, activation="relu")
  with pytest.raises(ConfigError, match=r"group0_block0_conv1/kernel: shape \(3, 3, 16, 16\)"):
    _state(folder, name="wrn-10-2")
  with pytest.raises(ConfigError, match="no model at"):
    _state(os.path.join(folder, "nowhere"))


_PLAIN_KERAS = """
import sys
import keras, numpy as np
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], model(np.load(sys.argv[2]), training=False).numpy())
assert not any(m == "rgd" or m.startswith("rgd.") for m in sys.modules), "rgd was imported"
"""


def _plain_keras(path, x, tmp_path):
  """Logits of `path` from a fresh process that never imports rgd (as foolbox users load it)."""
  np.save(tmp_path / "x.npy", x)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", _PLAIN_KERAS, path, str(tmp_path / "x.npy"),
                           str(tmp_path / "logits.npy")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120, check=False)
  return result, (np.load(tmp_path / "logits.npy") if result.returncode == 0 else None)


@pytest.mark.slow
def test_one_step_from_the_file_and_its_export_loads_without_rgd(source, tmp_path, capfd, caplog,
                                                                monkeypatch):
  """rgd.train's main in this process (conftest.run_main; gin files named from the repository
  root); the export is then loaded by a fresh process that never imports rgd."""
  from rgd import train  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  caplog.set_level("INFO")
  folder, w0 = source
  data = write_npz_dataset(str(tmp_path / "data"), num_train=64, num_test=16)
  run = str(tmp_path / "run")
  bindings = ["get_model.name='wrn-10-1'", "train_and_evaluate.num_steps=1",
              "train_and_evaluate.eval_every=0", "train_and_evaluate.num_validation=0",
              "train_and_evaluate.image_summary_every=0", "BATCH_SIZE=16",
              "Objective.attack_steps=1", f"train_and_evaluate.init_checkpoint='{folder}'"]
  code = run_main(train.main, "rgd.train", [
      "rgd.train", "--gin_file=gin/debug.gin", f"--model_dir={run}",
      f"--gin_bindings=DATASET='npz:{data}'"] + [f"--gin_bindings={b}" for b in bindings])
  assert code == 0, capfd.readouterr().err[-3000:]
  assert "Initialised the network and its weight average from" in caplog.text
  avg = models.load(os.path.join(run, "model.keras"))  # the weight average after step 1
  network = models.get_model("wrn-10-1")
  tf.train.Checkpoint(network=network).restore(
      tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))).expect_partial()
  # EMA step 0 (decay_t = min(tau, 1/10) = 0.1): avg_1 = 0.1 * avg_0 + 0.9 * w_1, so the
  # average started from the file's weights exactly when this holds for every variable.
  w1 = {v.path: v.numpy() for v in network.weights}
  moved = 0
  for v in avg.weights:
    np.testing.assert_allclose(v.numpy(), 0.1 * w0[v.path] + 0.9 * w1[v.path], rtol=1e-5,
                               atol=1e-6, err_msg=v.path)
    moved += not np.allclose(w1[v.path], w0[v.path])
  assert moved > 10  # the step changed the network: the identity is not trivial
  # The run's export holds standard Keras layers: plain Keras loads it, same logits.
  assert not any("Fused" in type(l).__name__ for l in avg.layers)
  x = np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)
  loaded, logits = _plain_keras(os.path.join(run, "model.keras"), x, tmp_path)
  assert loaded.returncode == 0, loaded.stderr[-2000:]
  np.testing.assert_allclose(logits, avg(x, training=False).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_certified_net_names_the_import_that_registers_its_layers(tmp_path):
  path = str(tmp_path / "liresnet.keras")
  checkpointing.export_keras(models.get_model("liresnet-L2W16"), path)
  result, _ = _plain_keras(path, np.zeros((1, 32, 32, 3), np.float32), tmp_path)
  assert result.returncode != 0
  # Keras' message names the class and the module whose import registers it.
  assert "Could not locate class" in result.stderr and "rgd.certified.layers" in result.stderr
