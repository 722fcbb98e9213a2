"""Real-data loading (npz, tfds mock), augmentation, and exact real/generated mixing."""
import os

import numpy as np
import pytest
import tensorflow as tf

from rgd import errors
from rgd.data import datasets, registry, sources, tfrecord
from conftest import make_images


def _write_generated(folder, n=40, num_shards=2, label_offset=0, seed=1):
  os.makedirs(folder, exist_ok=True)
  x, y = make_images(n, seed=seed)
  y = (y + label_offset) % 10
  for s in range(num_shards):
    records = [tfrecord.serialize(x[i], y[i], 0.5) for i in range(s, n, num_shards)]
    tfrecord.write_shard(tfrecord.shard_name(os.path.join(folder, "gen"), s, num_shards),
                         records)
  return os.path.join(folder, "gen-*.tfrecord")


def test_npz_splits_hold_out_last_images(npz_dataset):
  x, y = datasets.load_split(f"npz:{npz_dataset}", "train", num_validation=16)
  xv, yv = datasets.load_split(f"npz:{npz_dataset}", "validation", num_validation=16)
  xf, yf = datasets.load_split(f"npz:{npz_dataset}", "train_full")
  assert len(x) == 80 and len(xv) == 16
  np.testing.assert_array_equal(np.concatenate([x, xv]), xf)
  np.testing.assert_array_equal(np.concatenate([y, yv]), yf)
  xt, _ = datasets.load_split(f"npz:{npz_dataset}", "test")
  assert xt.shape == (32, 32, 32, 3) and xt.dtype == np.uint8


@pytest.mark.parametrize("change,match", [
    (dict(image_key="images"), r"missing key\(s\) \['image'\]"),
    (dict(dtype=np.float32), "must be uint8"),
    (dict(shape=(8, 32, 32)), r"shape \[N, H, W, 3\]"),
    (dict(label_value=10), r"label 10 out of range \[0, 10\)"),
    (dict(label_value=-1), r"label -1 out of range"),
])
def test_bad_npz_gives_clear_error_naming_file(tmp_path, change, match):
  path = str(tmp_path / "train.npz")
  x = np.zeros(change.get("shape", (8, 32, 32, 3)), change.get("dtype", np.uint8))
  y = np.zeros(8, np.int64)
  if "label_value" in change:
    y[3] = change["label_value"]
  np.savez(path, **{change.get("image_key", "image"): x, "label": y})
  with pytest.raises(errors.DataError, match=match) as e:
    datasets.load_npz(path, num_classes=10)
  assert path in str(e.value)


def test_npz_is_read_without_pickle(tmp_path):
  path = str(tmp_path / "train.npz")
  np.savez(path, image=np.array([object()], dtype=object), label=np.zeros(1, np.int64))
  with pytest.raises(errors.DataError, match="without pickle"):
    datasets.load_npz(path)


def test_unknown_dataset_and_missing_file(tmp_path):
  with pytest.raises(errors.DataError, match="Unknown dataset 'mnist2'"):
    datasets.load_split("mnist2", "train")
  with pytest.raises(errors.DataError, match="train.npz: file not found"):
    datasets.load_split(f"npz:{tmp_path}", "train")


def test_tfds_loading_with_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=1100):
    x, y = datasets.load_split("cifar10", "train")
    xv, _ = datasets.load_split("cifar10", "validation")
  assert x.shape == (1100 - 1024, 32, 32, 3) and x.dtype == np.uint8
  assert xv.shape[0] == 1024 and y.max() < 10


def test_pad_crop_flip_is_a_shifted_window_and_same_in_tf_data():
  x = tf.constant(make_images(16)[0])
  seed = tf.constant([3, 4])
  out = datasets.pad_crop_flip(x, seed).numpy()
  padded = np.pad(x.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
  for i in range(16):
    found = False
    for dy in range(9):
      for dx in range(9):
        window = padded[i, dy:dy + 32, dx:dx + 32]
        found |= np.array_equal(out[i], window) or np.array_equal(out[i], window[:, ::-1])
    assert found, i
  in_pipeline = next(iter(tf.data.Dataset.from_tensors(x).map(
      lambda b: datasets.pad_crop_flip(b, seed))))
  np.testing.assert_array_equal(out, in_pipeline.numpy())


@pytest.mark.parametrize("batch,ratio,replicas,pipelines", [
    (10, 0.3, 1, 1), (10, 0.3, 2, 1), (16, 0.3, 4, 2), (12, 0.0, 2, 1), (8, 1.0, 2, 1)])
def test_mixed_batches_hold_exactly_the_configured_real_count(tmp_path, batch, ratio, replicas,
                                                              pipelines):
  pattern = _write_generated(str(tmp_path / "gen"), num_shards=2)
  x, y = make_images(50)
  counts = np.zeros(3, int)
  for pipeline in range(pipelines):
    ds = datasets.make_train_dataset(x, y, 10, batch, num_replicas=replicas,
                                 num_input_pipelines=pipelines, input_pipeline_id=pipeline,
                                 generated_pattern=pattern, mixing_ratio=ratio,
                                 generated_shuffle_buffer=8)
    for step, b in enumerate(ds.take(3)):
      assert b["image"].shape == (replicas // pipelines, batch // replicas, 32, 32, 3)
      counts[step] += int(tf.reduce_sum(tf.cast(b["is_real"], tf.int32)))
      real = b["is_real"].numpy().reshape(-1)
      labels = b["label"].numpy().reshape(-1, 10)
      # Real labels are one-hot; generated ones smoothed to 0.9 * onehot + 0.01.
      np.testing.assert_allclose(labels[real].max(1), 1.0)
      np.testing.assert_allclose(labels[~real].max(1), 0.91, rtol=1e-6)
      np.testing.assert_allclose(labels[~real].min(1), 0.01, rtol=1e-5)
  np.testing.assert_array_equal(counts, [int(round(ratio * batch))] * 3)


def test_without_generated_data_every_example_is_real_and_in_range():
  x, y = make_images(50)
  b = next(iter(datasets.make_train_dataset(x, y, 10, 8, augment=False)))
  assert bool(tf.reduce_all(b["is_real"]))
  img = b["image"].numpy()[0]
  # uint8 goes to the device when no batch augmentation needs floats.
  assert img.dtype == np.uint8
  # Without augmentation each image is exactly one of the inputs.
  flat = x.reshape(50, -1)
  for im, lab in zip(img, b["label"].numpy()[0]):
    idx = np.where((flat == im.reshape(-1)).all(1))[0]
    assert len(idx) >= 1 and y[idx[0]] == lab.argmax()


def test_iterator_checkpoint_replays_the_same_batches(tmp_path):
  pattern = _write_generated(str(tmp_path / "gen"))
  x, y = make_images(50)
  it = iter(datasets.make_train_dataset(x, y, 10, 8, generated_pattern=pattern,
                                    generated_shuffle_buffer=16))
  next(it)
  ckpt = tf.train.Checkpoint(iterator=it)
  path = ckpt.save(str(tmp_path / "ckpt"))
  after = [next(it)["image"].numpy() for _ in range(3)]
  ckpt.restore(path)
  again = [next(it)["image"].numpy() for _ in range(3)]
  for a, b in zip(after, again):
    np.testing.assert_array_equal(a, b)


def test_eval_dataset_pads_with_mask():
  x, y = make_images(10)
  batches = list(datasets.make_eval_dataset(x, y, 4))
  assert len(batches) == 3
  mask = np.concatenate([b["mask"].numpy() for b in batches])
  assert mask.sum() == 10 and not mask[10:].any()


def test_tfds_without_network_says_how_to_provide_the_data(monkeypatch, tmp_path):
  import tensorflow_datasets as tfds

  def offline(self, *args, **kwargs):
    raise ConnectionError("Failed to establish a new connection")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  monkeypatch.setattr(sources, "network_reachable", lambda: True)  # the probe passed, then...
  with pytest.raises(errors.DataError) as e:
    datasets.load_split("cifar10", "train", data_dir=str(tmp_path))
  message = str(e.value)
  assert "could not prepare 'cifar10'" in message and "ConnectionError" in message
  assert "train_and_evaluate.data_dir" in message and "npz:DIR" in message


def test_tfds_offline_fails_fast_without_trying_to_download(monkeypatch, tmp_path):
  """A closed port stands for the unreachable download host: the clear error comes at once and
  tfds' download (which retries for ~200 s offline) is never started."""
  import socket
  import time
  import tensorflow_datasets as tfds

  def must_not_download(self, *args, **kwargs):
    raise AssertionError("download_and_prepare was called")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", must_not_download)
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_HOST", closed)
  start = time.time()
  with pytest.raises(errors.DataError, match="no network to download it") as e:
    datasets.load_split("cifar10", "train", data_dir=str(tmp_path))
  assert time.time() - start < 10
  assert "npz:DIR" in str(e.value)


def test_tfds_default_probe_answers_within_its_timeout(monkeypatch, tmp_path):
  """The real probe (whatever this machine's network): an answer, either way, in ~5 s."""
  import time
  start = time.time()
  reachable = sources.network_reachable()
  assert isinstance(reachable, bool) and time.time() - start < sources.NETWORK_PROBE_TIMEOUT_S + 2


def test_truncated_npz_is_a_data_error(tmp_path):
  path = str(tmp_path / "train.npz")
  np.savez(path, image=np.zeros((64, 32, 32, 3), np.uint8), label=np.zeros(64, np.int64))
  with open(path, "r+b") as f:  # a partial copy
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(errors.DataError, match="train.npz: not a valid npz file"):
    datasets.load_npz(path)


def test_pad_crop_flip_without_flip_gives_the_same_crops_unmirrored():
  """flip=False only drops the mirror: every image is the flip=True output, unmirrored where that
  one was mirrored, i.e. the same window."""
  x = tf.constant(make_images(32)[0])
  seed = tf.constant([5, 6])
  flipped = datasets.pad_crop_flip(x, seed).numpy()
  plain = datasets.pad_crop_flip(x, seed, flip=False).numpy()
  mirrored = 0
  for a, b in zip(flipped, plain):
    if not np.array_equal(a, b):
      np.testing.assert_array_equal(a[:, ::-1], b)
      mirrored += 1
  assert 4 <= mirrored <= 28  # about half of 32 were mirrored with flip=True


def test_train_dataset_flip_false_only_crops(tmp_path):
  """Without flip every training image is an unmirrored pad-4 window of one input image."""
  x, y = make_images(50)
  b = next(iter(datasets.make_train_dataset(x, y, 10, 16, flip=False)))["image"].numpy()[0]
  padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
  windows = {padded[i, dy:dy + 32, dx:dx + 32].tobytes()
             for i in range(50) for dy in range(9) for dx in range(9)}
  assert all(im.tobytes() in windows for im in b)


def test_registry_entries_agree_with_models_and_tfds_names():
  """Each entry's statistics name is one rgd.models knows; classes and size as published."""
  from rgd import models  # pylint: disable=g-import-not-at-top
  assert sorted(registry.DATASETS) == ["cifar10", "cifar100", "cifar10_1", "digits", "svhn_cropped"]
  for name, spec in registry.DATASETS.items():
    assert spec.name == name and spec.image_size == (32, 32)
    assert spec.normalization is None or spec.normalization in models.NORMALIZATION
  assert [registry.DATASETS[n].num_classes for n in ("cifar10", "cifar100", "svhn_cropped")] == [
      10, 100, 10]
  assert registry.get("cifar100").normalization == "cifar100"
  with pytest.raises(errors.DataError, match="use one of .*'cifar10'.* or 'npz:DIR'"):
    registry.get("cifar-10")


def test_npz_entry_reads_the_folder_and_counts_classes(npz_dataset):
  spec = registry.get(f"npz:{npz_dataset}")
  assert spec.num_classes is None and spec.flip
  images, labels = spec.load("test", None, 10)
  np.testing.assert_array_equal(images, datasets.load_split(f"npz:{npz_dataset}", "test")[0])
  assert registry.num_classes_of(f"npz:{npz_dataset}") == int(
      sources.load_npz(os.path.join(npz_dataset, "train.npz"))[1].max()) + 1
  assert registry.num_classes_of("cifar100") == 100 and registry.num_classes_of("x", 7) == 7
