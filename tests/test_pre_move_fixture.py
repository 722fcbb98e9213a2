"""Files written before the package reorganisation still load after it.

`tests/fixtures/pre_move/` was written by rgd before it was split into packages
(flat modules: rgd/train.py,
rgd/training/trainer.py, ...) with a 2-step debug run of WRN-10-1 (`gin/debug.gin`, `wrn-10-1`) and a
LiResNet-L2W8: its `model.keras` (fused BatchNorm, weight-averaged), its training checkpoint,
its operative config, a `liresnet.keras` (rgd's certified layers), and the logits of each on four
fixed inputs. Keras files name rgd's layers by their registered names and checkpoints by the
object graph, not by module paths, so moving modules must change none of them.
"""
import os

import gin
import numpy as np
import tensorflow as tf

from rgd import models

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pre_move")


def _expected():
  return np.load(os.path.join(FIXTURE, "logits.npz"))


def test_model_keras_from_before_the_move_gives_identical_logits():
  expected = _expected()
  model = models.load(os.path.join(FIXTURE, "model.keras"))
  np.testing.assert_array_equal(model(expected["x"], training=False).numpy(), expected["model"])


def test_certified_model_from_before_the_move_gives_identical_logits():
  expected = _expected()
  model = models.load(os.path.join(FIXTURE, "liresnet.keras"))
  np.testing.assert_array_equal(model(expected["x"], training=False).numpy(),
                                expected["liresnet"])


def test_checkpoint_from_before_the_move_restores_identical_weights():
  expected = _expected()
  network = models.get_model("wrn-10-1", 10, (32, 32, 3))
  checkpoint = tf.train.Checkpoint(network=network)
  path = tf.train.latest_checkpoint(os.path.join(FIXTURE, "checkpoints"))
  checkpoint.restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(network(expected["x"], training=False).numpy(),
                                expected["checkpoint"])


def test_operative_config_from_before_the_move_parses():
  import rgd.train  # noqa: F401  pylint: disable=g-import-not-at-top  (registers every configurable)
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(FIXTURE, "operative_config.gin"))
    assert gin.query_parameter("get_model.name") == "wrn-10-1"
  finally:
    gin.clear_config()
