"""rgd.datagen.sources: every input format reads back exactly, locally and from a bucket; bad
input names the file."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd import errors
from rgd.datagen import sources
from rgd.runtime import fileio


@pytest.fixture
def data():
  return make_images(23, num_classes=4, size=8, seed=1)


def test_npz_stored_is_memory_mapped_and_exact(tmp_path, data):
  x, y = data
  path = str(tmp_path / "s.npz")
  np.savez(path, image=x, label=y, extra=np.arange(3))
  src = sources.open_source(path)
  assert src.kind == "npz" and src.num_images == 23 and src.image_shape == (8, 8, 3)
  # The image member is read where it lies in the zip (at a byte offset), not extracted.
  member = src.parts[0].images
  assert member.path == path and member.offset > 0 and member.count == 23
  np.testing.assert_array_equal(src.read(0, 23), x)
  np.testing.assert_array_equal(src.read(5, 9), x[5:9])
  np.testing.assert_array_equal(src.labels, y)
  idx = np.array([22, 0, 7, 7, 3])
  np.testing.assert_array_equal(src.take(idx), x[idx])
  batches = list(src.batches(10))
  assert [s for s, _ in batches] == [0, 10, 20]
  np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), x)


def test_npz_compressed_is_extracted_once(tmp_path, data):
  x, y = data
  path = str(tmp_path / "c.npz")
  np.savez_compressed(path, image=x, label=y)
  with pytest.raises(errors.SourceError, match="compressed"):
    sources.open_source(path)
  cache = str(tmp_path / "cache")
  src = sources.open_source(path, cache_dir=cache)
  np.testing.assert_array_equal(src.read(0, 23), x)
  assert len(os.listdir(cache)) == 1
  np.testing.assert_array_equal(sources.open_source(path, cache_dir=cache).take([4]), x[[4]])


def test_npy_files_glob_folder_and_unzipped_npz(tmp_path, data):
  x, y = data
  folder = tmp_path / "npys"
  folder.mkdir()
  np.save(folder / "a.npy", x[:10])
  np.save(folder / "b.npy", x[10:])
  for spec in (str(folder / "*.npy"), str(folder)):
    src = sources.open_source(spec)
    assert src.num_images == 23 and src.labels is None
    np.testing.assert_array_equal(src.read(8, 14), x[8:14])  # across the file boundary
    np.testing.assert_array_equal(src.take([20, 1, 12]), x[[20, 1, 12]])
  unzipped = tmp_path / "unzipped"
  unzipped.mkdir()
  np.save(unzipped / "image.npy", x)
  np.save(unzipped / "label.npy", y)
  src = sources.open_source(str(unzipped))
  np.testing.assert_array_equal(src.labels, y)
  np.testing.assert_array_equal(src.read(0, 23), x)


def test_image_folder_with_class_subfolders(tmp_path, data):
  x, y = data
  for i in range(6):
    d = tmp_path / "png" / str(y[i])
    d.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(d / f"{i:03d}.png"), tf.io.encode_png(x[i]))
  src = sources.open_source(str(tmp_path / "png"))
  # Name order: by class folder, then file name.
  order = sorted(range(6), key=lambda i: (str(y[i]), i))
  np.testing.assert_array_equal(src.read(0, 6), x[order])
  np.testing.assert_array_equal(src.labels, y[order])


def test_int_images_in_range_are_accepted(tmp_path, data):
  x, _ = data
  path = str(tmp_path / "i.npy")
  np.save(path, x.astype(np.int64))
  np.testing.assert_array_equal(sources.open_source(path).read(0, 23), x)


@pytest.mark.parametrize("case,match", [
    ("float", r"f\.npz\['image'\]: images are float32; expected uint8"),
    ("above255", r"v\.npz\['image'\]: image 2 has values in \[0, 300\]"),
    ("shape", r"s\.npz\['image'\]: images must have shape \[N, H, W, 3\], got \(4, 8, 8\)"),
    ("missing", r"m\.npz: missing key 'image'; found \['images'\]"),
    ("empty", r"e\.npz\['image'\]: no images"),
    ("labels_float", r"l\.npz\['label'\]: labels must be integers"),
])
def test_bad_npz_names_the_file(tmp_path, data, case, match):
  x, y = data
  name = {"float": "f", "above255": "v", "shape": "s", "missing": "m", "empty": "e",
          "labels_float": "l"}[case]
  path = str(tmp_path / f"{name}.npz")
  if case == "float":
    np.savez(path, image=x.astype(np.float32) / 255)
  elif case == "above255":
    bad = x[:4].astype(np.int32)
    bad[2, 0, 0, 0] = 300
    bad[2, 0, 0, 1] = 0
    np.savez(path, image=bad)
  elif case == "shape":
    np.savez(path, image=x[:4, :, :, 0])
  elif case == "missing":
    np.savez(path, images=x)
  elif case == "empty":
    np.savez(path, image=x[:0])
  else:
    np.savez(path, image=x, label=y.astype(np.float32))
  with pytest.raises(errors.SourceError, match=match):
    src = sources.open_source(path)
    src.read(0, src.num_images)


def test_labels_out_of_range(tmp_path, data):
  x, y = data
  path = str(tmp_path / "r.npz")
  np.savez(path, image=x, label=np.where(np.arange(23) == 9, 7, y))
  src = sources.open_source(path)
  src.check_labels(8)
  with pytest.raises(errors.SourceError, match=r"r\.npz: label 7 of image 9 is out of range "
                     r"\[0, 4\)"):
    src.check_labels(4)


def test_folder_of_different_sizes_and_unknown_input(tmp_path, data):
  x, _ = data
  d = tmp_path / "mixed"
  d.mkdir()
  tf.io.write_file(str(d / "a.png"), tf.io.encode_png(x[0]))
  tf.io.write_file(str(d / "b.png"), tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
  src = sources.open_source(str(d))
  with pytest.raises(errors.SourceError, match=r"b\.png: image of shape \(4, 4, 3\), "
                     r"expected \(8, 8, 3\)"):
    src.read(0, 2)
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.SourceError, match=r"empty: no images \(\.png, \.jpg, \.jpeg\)"):
    sources.open_source(str(tmp_path / "empty"))
  with pytest.raises(errors.SourceError, match="not found"):
    sources.open_source(str(tmp_path / "nope.npz"))


def test_a_bucket_is_read_in_place_and_local_files_by_pread(tmp_path, data, monkeypatch):
  # ram:// stands for gs://: the same bytes read through gfile give the same images; a
  # compressed member is extracted into a cache on the same kind of filesystem.
  x, y = data
  fileio.save_npz("ram://sources/s.npz", image=x, label=y)
  buf = io.BytesIO()
  np.savez_compressed(buf, image=x, label=y)
  fileio.atomic_write_bytes("ram://sources/c.npz", buf.getvalue())
  np.save(tmp_path / "local.npy", x)
  remote = sources.open_source("ram://sources/s.npz")
  deflated = sources.open_source("ram://sources/c.npz", cache_dir="ram://sources/cache")
  local = sources.open_source(str(tmp_path / "local.npy"))
  assert tf.io.gfile.listdir("ram://sources/cache") == [
      f"c.npz.image.{tf.io.gfile.stat('ram://sources/c.npz').length}."
      f"{int(tf.io.gfile.stat('ram://sources/c.npz').mtime_nsec // 10**9)}.npy"]
  idx = np.array([22, 0, 7, 8, 9, 3])
  for src in (remote, deflated, local):
    np.testing.assert_array_equal(src.take(idx), x[idx])
  np.testing.assert_array_equal(remote.labels, y)
  np.testing.assert_array_equal(deflated.labels, y)

  # Once open, a local file's rows never go through gfile (os.pread); a bucket's must.
  def no_gfile(*args, **kwargs):
    raise AssertionError("read through gfile")
  # rgd's gfile (rgd.runtime.fileio.gfile, bound to tf.io.gfile when rgd loads) and tf.io.gfile
  # as the test sees it: after apache_beam has loaded (tests/test_beam_pipeline.py in the same
  # process) they are two module objects of the same file, and patching one misses the other.
  monkeypatch.setattr(sources.gfile, "GFile", no_gfile)
  monkeypatch.setattr(tf.io.gfile, "GFile", no_gfile)
  np.testing.assert_array_equal(local.take(idx), x[idx])
  with pytest.raises(AssertionError, match="read through gfile"):
    remote.take(idx)


def test_glob_of_npz_and_one_label_file_for_several_npy(tmp_path, data):
  x, y = data
  np.savez(tmp_path / "a.npz", image=x[:9], label=y[:9])
  np.savez(tmp_path / "b.npz", image=x[9:], label=y[9:])
  src = sources.open_source(str(tmp_path / "*.npz"))
  assert src.kind == "npz" and src.num_images == 23
  np.testing.assert_array_equal(src.read(0, 23), x)
  np.testing.assert_array_equal(src.labels, y)
  np.testing.assert_array_equal(src.take([20, 8, 9]), x[[20, 8, 9]])
  # One .npz without labels: the set has none.
  np.savez(tmp_path / "b.npz", image=x[9:])
  assert sources.open_source(str(tmp_path / "*.npz")).labels is None
  # sample_job's layout: chunk files plus one label file for all of them.
  for i, (a, b) in enumerate([(0, 10), (10, 23)]):
    np.save(tmp_path / f"chunk{i}.npy", x[a:b])
  np.save(tmp_path / "labels.npy", y)
  src = sources.open_npy([str(tmp_path / "chunk0.npy"), str(tmp_path / "chunk1.npy")],
                         str(tmp_path / "labels.npy"), name="edm:g")
  assert src.path == "edm:g"
  np.testing.assert_array_equal(src.labels, y)
  np.testing.assert_array_equal(src.chunks(8)[1].read()[2], y[8:16])


def test_negative_labels_and_truncated_files(tmp_path, data):
  x, y = data
  path = str(tmp_path / "n.npz")
  np.savez(path, image=x, label=np.where(np.arange(23) == 4, -1, y))
  src = sources.open_source(path)
  with pytest.raises(errors.SourceError, match=r"n\.npz\['label'\]: label -1 of image 4 is "
                     "negative"):
    _ = src.labels
  with pytest.raises(errors.SourceError, match=r"label -1 of image 4 is negative"):
    src.chunks(8)[0].read()
  np.testing.assert_array_equal(src.chunks(8)[1].read()[2], y[8:16])  # Other chunks read.
  short = tmp_path / "t.npy"
  np.save(short, x)
  with open(short, "r+b") as f:
    f.truncate(os.path.getsize(short) - 10)
  src = sources.open_source(str(short))
  np.testing.assert_array_equal(src.read(0, 22), x[:22])
  with pytest.raises(errors.SourceError, match=r"t\.npy: file is shorter than its header says"):
    src.read(20, 23)
