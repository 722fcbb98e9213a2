"""Golden runs pinned before the "one way to do each thing" refactor: 5 TRADES steps (with a
generated-data mix, CutMix-free, Adam attack of gin/base.gin) and 3 GloRo steps from a fixed seed
must give bit-identical weights before and after any restructuring of objectives, attacks,
generated-data readers and the training loop.

The digests were computed by this very test on the code as it stood before the refactor (same
machine kind as CI: x86-64 CPU, TF_DETERMINISTIC_OPS=1). A change of digest means the training
arithmetic changed: find out why before updating them, and say so in the commit.
"""
import hashlib
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images, write_npz_dataset
from rgd import cli
from rgd.data import tfrecord
from rgd.training.loop import train_and_evaluate

GOLDEN = {
    "trades": "fb72b485a30af79a43522362051818eb9abbd1f3244ec418b4f8f3e7c7623f99",
    "gloro": "87c58963b6b038a0adbae5d2a7f95c68655893a7032fc03d0907f8e6ece73842",
}


def _weights_digest(model_dir):
  """sha256 of the weight-averaged model's weights at the end (last.keras, in the model's weight
  order, float32 bytes). The average after step t depends on every online weight up to t, so
  equal digests mean every step computed the same numbers."""
  model = keras.saving.load_model(os.path.join(model_dir, "last.keras"), compile=False)
  h = hashlib.sha256()
  for w in model.weights:
    h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w), np.float32).tobytes())
  return h.hexdigest()


def _write_generated(folder, n=64):
  x, y = make_images(n, seed=7)
  serialized = [tfrecord.serialize(img, int(lab)) for img, lab in zip(x, y)]
  os.makedirs(folder, exist_ok=True)
  tfrecord.write_shard(os.path.join(folder, "gen-00000-of-00001.tfrecord"), serialized)
  return os.path.join(folder, "gen-*.tfrecord")


def _run(gin_file, bindings, model_dir):
  gin.clear_config()
  try:
    cli.parse_gin([gin_file], bindings)
    train_and_evaluate(model_dir, tf.distribute.get_strategy())
  finally:
    gin.clear_config()
  return _weights_digest(model_dir)


@pytest.mark.parametrize("kind", ["trades", "gloro"])
def test_golden_weights(kind, tmp_path):
  data = write_npz_dataset(str(tmp_path / "data"))
  common = [f"DATASET='npz:{data}'", "train_and_evaluate.eval_every=0",
            "train_and_evaluate.image_summary_every=0", "train_and_evaluate.seed=3",
            "train_and_evaluate.num_validation=16"]
  if kind == "trades":
    pattern = _write_generated(str(tmp_path / "gen"))
    digest = _run("gin/debug.gin", common + [
        "train_and_evaluate.num_steps=5", "BATCH_SIZE=16",
        f"train_and_evaluate.generated_pattern='{pattern}'",
        "train_and_evaluate.mixing_ratio=0.5"], str(tmp_path / "run"))
  else:
    digest = _run("gin/gloro_debug.gin", common + [
        "train_and_evaluate.num_steps=3", "BATCH_SIZE=16"], str(tmp_path / "run"))
  print(kind, digest)
  assert GOLDEN[kind] is not None, f"record the golden digest first: {digest}"
  assert digest == GOLDEN[kind]
