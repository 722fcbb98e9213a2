"""DeepAugment: every distortion runs, copies are reproducible, and the TFRecords it writes are
read back by the training pipeline's mixing code with their labels."""
import os

import numpy as np
import pytest
import tensorflow as tf

from rgd.data import datasets
from rgd.corruptions import deepaugment, networks

from conftest import make_images


@pytest.mark.parametrize("option", deepaugment.WEIGHT_OPTIONS)
def test_each_weight_distortion_changes_the_network(option, monkeypatch):
  net = networks.EDSRCifar(num_blocks=2, features=4)
  params = {k: v + 0.1 for k, v in net.init(0).items()}
  monkeypatch.setattr(deepaugment, "WEIGHT_OPTIONS", (option,))
  changed = deepaugment.distort_weights(params, net.residual_blocks(),
                                        np.random.default_rng(option), num_options=1)
  assert set(changed) == set(params)
  assert all(changed[k].shape == v.shape for k, v in params.items())
  assert any(not np.array_equal(changed[k], v) for k, v in params.items())


def test_written_copies_are_read_back_with_labels(tmp_path):
  images, labels = make_images(24, size=16)
  net = networks.EDSRCifar(num_blocks=6, features=4)
  params = {k: v + 0.02 for k, v in net.init(0).items()}
  folder = str(tmp_path / "da")
  names = deepaugment.write_deepaugment(folder, net, params, images, labels, num_copies=2,
                                        examples_per_shard=20, images_per_draw=8)
  assert len(names) == 3 and os.path.exists(os.path.join(folder, "metadata.json"))
  src = deepaugment.DeepAugmentSource(net, params, images, 2, images_per_draw=8)
  expected = src.take(np.arange(48))
  assert not np.array_equal(expected[:24], expected[24:])  # copies differ
  assert np.abs(expected[:24].astype(int) - images).mean() > 1  # and differ from the input
  np.testing.assert_array_equal(src.take([30, 3]), expected[[30, 3]])  # any order, same bytes
  ds = datasets.make_train_dataset(images, labels, 10, 16, seed=0, augment=False,
                               generated_pattern=os.path.join(folder, "deepaugment-*.tfrecord"),
                               mixing_ratio=0.5, generated_label_smoothing=0.0)
  batch = next(iter(ds))
  gen_images = batch["image"][0][8:].numpy()
  gen_labels = batch["label"][0][8:].numpy().argmax(1)
  for img, lab in zip(gen_images, gen_labels):
    match = np.flatnonzero((expected == img).all(axis=(1, 2, 3)))
    assert match.size and labels[match[0] % 24] == lab


@pytest.mark.parametrize("net", [networks.EDSRBaselineX4(num_blocks=2, features=4),
                                 networks.DeepAugmentCAE(widths=(4, 6, 3, 4, 3, 5, 2))],
                         ids=["edsr_baseline_x4", "deepaugment_cae"])
def test_published_networks_distort_reproducibly_at_the_input_size(net):
  images, _ = make_images(8, size=16)
  rng = np.random.default_rng(0)
  params = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in net.init(0).items()}
  src = deepaugment.DeepAugmentSource(net, params, images, num_copies=2, images_per_draw=4)
  out = src.take(np.arange(16))
  assert out.shape == (16, 16, 16, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(src.take([9, 2]), out[[9, 2]])  # keyed by (seed, copy, group)
  assert not np.array_equal(out[:8], out[8:])
