"""The CIFAR-10.1 suite: its accuracies equal a direct computation on the same arrays."""
import json
import os

import keras
import numpy as np

from rgd import models
from rgd.evaluation import cifar10_1


def test_cifar10_1_accuracy_equals_direct_computation(tmp_path):
  keras.utils.set_random_seed(0)
  model = models.get_model("tiny_cnn", width=4)
  # A non-zero head so that predictions vary from image to image.
  head = model.layers[-1]
  head.kernel.assign(np.random.RandomState(1).normal(size=head.kernel.shape))
  rng = np.random.RandomState(0)
  sets = {name: (rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8),
                 rng.randint(0, 10, n).astype(np.int64)) for name, n in (("a", 37), ("b", 23))}
  report = cifar10_1.evaluate_cifar10_1(model, sets["a"], sets["b"], str(tmp_path),
                                        batch_size=8)
  for name, key in (("a", "cifar10_accuracy"), ("b", "cifar10_1_accuracy")):
    images, labels = sets[name]
    direct = np.mean(np.argmax(model.predict(images / 255., verbose=0), -1) == labels)
    assert report[key] == direct
  assert report["num_examples"] == {"cifar10": 37, "cifar10_1": 23}
  assert 0 < report["cifar10_accuracy"] < 1
  written = json.load(open(tmp_path / "eval_cifar10_1.json"))
  assert written["gap"] == report["cifar10_accuracy"] - report["cifar10_1_accuracy"]
  assert "AdA + AugMix" in written["table"] and "91.05%" in written["table"]
  with np.load(tmp_path / "eval_cifar10_1.npz") as f:
    assert f["correct_cifar10_1"].mean() == report["cifar10_1_accuracy"]
  assert os.listdir(tmp_path / "tensorboard")
