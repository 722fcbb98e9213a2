"""rgd.datagen.sources in chunks (the Beam runner's work items): every input format read chunk
by chunk, each chunk pickled as a worker gets it, gives the images, labels and indices that
the same source gives by index, also from `ram://` (which stands for gs:// here); bad input
names the file."""
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd.runtime import fileio
from rgd.datagen import formats, sources
from rgd.errors import SourceError


def _write_inputs(d):
  x, y = make_images(50, num_classes=4, size=8, seed=1)
  np.savez(f"{d}/stored.npz", image=x, label=y)
  np.savez_compressed(f"{d}/deflated.npz", image=x, label=y)
  os.makedirs(f"{d}/npys")
  np.save(f"{d}/npys/0.npy", x[:17])
  np.save(f"{d}/npys/1.npy", x[17:])
  os.makedirs(f"{d}/unzipped")
  np.save(f"{d}/unzipped/image.npy", x)
  np.save(f"{d}/unzipped/label.npy", y.astype(np.int32))
  for i in range(12):
    os.makedirs(f"{d}/png/{y[i]}", exist_ok=True)
    tf.io.write_file(f"{d}/png/{y[i]}/{i:03d}.png", tf.io.encode_png(x[i]))
  return x, y


def _read_all(source, chunk_size):
  parts = [pickle.loads(pickle.dumps(c)).read() for c in source.chunks(chunk_size)]
  labels = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), labels


@pytest.mark.parametrize("name", ["stored.npz", "deflated.npz", "npys", "npys/*.npy",
                                  "unzipped", "png"])
def test_chunks_read_what_sources_read(tmp_path, name):
  _write_inputs(tmp_path)
  path = str(tmp_path / name)
  source = sources.open_source(path, str(tmp_path / "cache"))
  assert source.has_labels == (name != "npys" and name != "npys/*.npy")
  for chunk_size in (7, 16, 64):  # 7 and 16 cut across the two .npy files (17 + 33 images).
    cs = source.chunks(chunk_size)
    assert [(c.start, c.stop) for c in cs] == [
        (s, min(s + chunk_size, source.num_images))
        for s in range(0, source.num_images, chunk_size)]
    ids, images, labels = _read_all(source, chunk_size)
    np.testing.assert_array_equal(ids, np.arange(source.num_images))
    np.testing.assert_array_equal(images, source.read(0, source.num_images))
    if source.labels is None:
      assert labels is None
    else:
      np.testing.assert_array_equal(labels, source.labels)
  if name == "npys":
    assert [len(c.pieces) for c in source.chunks(16)] == [1, 2, 1, 1]  # [16, 32) spans both


def test_remote_inputs_are_read_in_place(tmp_path):
  x, y = make_images(20, num_classes=3, size=8, seed=5)
  fileio.save_npz("ram://chunks/set.npz", image=x, label=y)  # np.savez: stored, readable at offsets
  fileio.save_npz("ram://chunks/glob/a.npz", image=x[:9], label=y[:9])
  fileio.save_npz("ram://chunks/glob/b.npz", image=x[9:])
  source = sources.open_source("ram://chunks/set.npz")
  piece = source.chunks(8)[1].pieces[0].images
  assert (piece.path, piece.first, piece.count) == ("ram://chunks/set.npz", 8, 8)  # In place.
  ids, images, labels = _read_all(source, 8)
  np.testing.assert_array_equal(images, x)
  np.testing.assert_array_equal(labels, y)
  # A glob of .npz files is one set in name order; one file without labels: no labels.
  source = sources.open_source("ram://chunks/glob/*.npz")
  ids, images, labels = _read_all(source, 6)
  np.testing.assert_array_equal(images, x)
  assert labels is None and source.kind == "npz" and not source.has_labels


def test_bad_input_names_the_file(tmp_path):
  np.save(tmp_path / "f.npy", np.zeros((2, 4, 4, 3), np.float32))
  with pytest.raises(SourceError, match=r"f\.npy: images are float32; expected uint8"):
    sources.open_source(str(tmp_path / "f.npy"))
  np.savez(tmp_path / "k.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
  with pytest.raises(SourceError, match=r"k\.npz: missing key 'image'; found \['x'\]"):
    sources.open_source(str(tmp_path / "k.npz"))
  np.savez(tmp_path / "l.npz", image=np.zeros((3, 4, 4, 3), np.uint8), label=np.zeros(2, int))
  with pytest.raises(SourceError, match=r"l\.npz\['label'\]: labels must have shape \[3\]"):
    sources.open_source(str(tmp_path / "l.npz"))
  np.save(tmp_path / "w.npy", np.full((3, 4, 4, 3), 300, np.int16))
  with pytest.raises(SourceError, match=r"w\.npy: image 2 has values in \[300, 300\]"):
    sources.open_source(str(tmp_path / "w.npy")).chunks(2)[1].read()
  with pytest.raises(SourceError, match="nothing.npy: not found"):
    sources.open_source(str(tmp_path / "nothing.npy"))


def test_layouts_of_each_input_form(tmp_path):
  """formats.resolve: which files, in which order, for each input form, and the refusals."""
  x = np.zeros((2, 4, 4, 3), np.uint8)
  (tmp_path / "pair").mkdir()
  np.save(tmp_path / "pair" / "image.npy", x)
  np.save(tmp_path / "pair" / "label.npy", np.arange(2))
  (tmp_path / "many").mkdir()
  for i in (1, 0):
    np.save(tmp_path / "many" / f"{i}.npy", x)
  for i in (1, 0):
    np.savez(tmp_path / f"s{i}.npz", image=x)
  pair, many = str(tmp_path / "pair"), str(tmp_path / "many")
  expected = {
      pair: formats.Layout("npy", (f"{pair}/image.npy",), f"{pair}/label.npy"),
      many: formats.Layout("npy", (f"{many}/0.npy", f"{many}/1.npy")),
      str(tmp_path / "s*.npz"): formats.Layout("npz", (str(tmp_path / "s0.npz"),
                                                       str(tmp_path / "s1.npz"))),
      str(tmp_path / "s1.npz"): formats.Layout("npz", (str(tmp_path / "s1.npz"),)),
  }
  for path, layout in expected.items():
    assert formats.resolve(path) == layout, path
  open(tmp_path / "s1.npzx", "w").close()
  for bad, message in ((str(tmp_path / "*"), "a glob must match .npy files only or .npz"),
                       (str(tmp_path / "nothing.npz"), "nothing.npz: not found"),
                       (str(tmp_path / "s1.npzx"), "unknown format")):
    with pytest.raises(SourceError, match=message):
      formats.resolve(bad)


def test_a_file_without_images_between_others(tmp_path):
  x, _ = make_images(30, num_classes=3, size=4, seed=2)
  np.save(tmp_path / "a.npy", x[:10])
  np.save(tmp_path / "b.npy", x[:0])
  np.save(tmp_path / "c.npy", x[10:])
  source = sources.open_source(str(tmp_path))
  for chunk_size in (1, 3, 7, 10, 64):
    cs = source.chunks(chunk_size)
    assert all(c.pieces for c in cs) and not any(p.count == 0 for c in cs for p in c.pieces)
    np.testing.assert_array_equal(_read_all(source, chunk_size)[1], x)
  assert [len(c.pieces) for c in source.chunks(7)] == [1, 2, 1, 1, 1]  # [7, 14) spans a and c
