"""Generated images on any filesystem, read in batches, by index, or in chunks by any process.

The one reader of generated images (formats: rgd.datagen.formats), used by the in-process job,
every Beam worker, complementarity and FID:
  * `.npz` with `image` uint8 [N, H, W, 3] and optional `label` int [N] (the layout of
    DeepMind's and DM-Improves-AT's published sets, docs/recipes.md "Generated data"). A member
    written by `np.savez` is stored uncompressed inside the zip and is read where it lies, at a
    byte offset; a member written by `np.savez_compressed` has no offsets into its deflated
    stream, so it is first extracted once, streamed, to `cache_dir` (any path) as a plain .npy;
  * `.npy`: one file, a glob (`'samples/*.npy'`) or a folder of .npy files, each uint8
    [n, H, W, 3], read in name order as one set. A folder that holds `image.npy` (and
    optionally `label.npy`) is read like an unzipped .npz;
  * a folder of PNG/JPEG files (searched recursively, name order), decoded with
    `tf.io.decode_image`. If every file sits in a sub-folder named by an integer
    (`DIR/3/x.png`), that integer is its label;
  * a glob of `.npz` files, read in name order as one set.

Nothing loads the whole set: opening reads headers only (and the first image of a folder); an
image's rows are read from its file's bytes when asked for, through tf.io.gfile, so `gs://`
inputs are read in place. Local files take a faster road to the same bytes: os.pread of each
run of consecutive rows, which gives what memory-mapping would (random rows of a 100M-image set
without reading the rest) without faulting in, and keeping resident, the pages around every row.

Every source is addressable by index (`read(start, stop)`, `take(indices)`), which the writer
needs to spread classes over shards, and cuts into `chunks` of consecutive images that pickle
small and that any process reads on its own (the Beam runner's work items; an image's id there is
its index here). One set of checks, whichever way the images are read: bad input raises
`SourceError` (a DataError) naming the file and what is wrong: float or object images, values
outside [0, 255], wrong shapes, missing keys, no images, labels that are not integers, negative
or out of range, files shorter than their headers say. Everything is read with
`allow_pickle=False`.
"""
import contextlib
import dataclasses
import io
import os
import posixpath
import zipfile

import numpy as np
import tensorflow as tf

from rgd.datagen import formats
from rgd.errors import SourceError
from rgd.runtime import fileio

gfile = fileio.gfile
_HEADER_BYTES = 4096  # More than any .npy header of a 4-d array needs.


@contextlib.contextmanager
def _reader(path):
  """Yields read_at(offset, size) -> bytes for `path`: os.pread on a local file (no stream
  position to move, no read-ahead of bytes between runs), gfile seek + read elsewhere."""
  if not fileio.is_remote(path):
    fd = os.open(path, os.O_RDONLY)  # local only: the fast road to the same bytes
    try:
      yield lambda offset, size: os.pread(fd, size, offset)
    finally:
      os.close(fd)
    return
  with gfile.GFile(path, "rb") as f:
    def read_at(offset, size):
      f.seek(offset)
      return f.read(size)
    yield read_at


@dataclasses.dataclass(frozen=True)
class ArrayFile:
  """`count` rows of a C-ordered array in `path`, the first at byte `offset`; they are rows
  `first`, `first` + 1, ... of the file (for messages). A .npy file or an np.savez member."""
  path: str
  where: str  # For messages: "x.npz['image']".
  offset: int
  row_shape: tuple
  dtype: str
  count: int
  first: int = 0

  @property
  def row_bytes(self):
    return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

  def slice(self, lo, hi):
    return dataclasses.replace(self, offset=self.offset + lo * self.row_bytes, count=hi - lo,
                               first=self.first + lo)

  def read(self, rows):
    """Rows `rows` (sorted positions in [0, count)) as stored: one read per run of
    consecutive rows."""
    rows = np.asarray(rows, np.int64)
    row = self.row_bytes
    out = bytearray(len(rows) * row)
    if len(rows):
      runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
      with _reader(self.path) as read_at:
        pos = 0
        for run in runs:
          size = len(run) * row
          data = read_at(self.offset + int(run[0]) * row, size)
          if len(data) != size:
            raise SourceError(f"{self.where}: file is shorter than its header says")
          out[pos:pos + size] = data
          pos += size
    return np.frombuffer(out, np.dtype(self.dtype)).reshape((len(rows),) + tuple(self.row_shape))


@dataclasses.dataclass(frozen=True, eq=False)
class Values:
  """Labels held in the listing itself: folder names, or a compressed .npz member (8 bytes an
  image, read whole once)."""
  where: str
  values: np.ndarray
  first: int = 0

  @property
  def count(self):
    return len(self.values)

  def slice(self, lo, hi):
    return dataclasses.replace(self, values=self.values[lo:hi], first=self.first + lo)

  def read(self, rows):
    return self.values[np.asarray(rows, np.int64)]


@dataclasses.dataclass(frozen=True)
class ImageFiles:
  """Encoded images (PNG/JPEG), one per file, all of `image_shape`."""
  paths: tuple
  image_shape: tuple
  first: int = 0

  @property
  def count(self):
    return len(self.paths)

  @property
  def where(self):
    return self.paths[0] if self.paths else "?"

  def slice(self, lo, hi):
    return dataclasses.replace(self, paths=self.paths[lo:hi], first=self.first + lo)

  def read(self, rows):
    out = np.empty((len(rows),) + tuple(self.image_shape), np.uint8)
    for j, i in enumerate(rows):
      out[j] = _decode(self.paths[int(i)], self.image_shape)
    return out


def _decode(name, expected_shape=None):
  try:
    image = tf.io.decode_image(fileio.read_bytes(name), channels=3, dtype=tf.uint8,
                               expand_animations=False).numpy()
  except (tf.errors.OpError, OSError) as e:
    raise SourceError(f"{name}: cannot decode image ({e})") from e
  if expected_shape is not None and image.shape != tuple(expected_shape):
    raise SourceError(f"{name}: image of shape {image.shape}, expected "
                      f"{tuple(expected_shape)} like the first image")
  return image


def check_label_range(labels, ids, num_classes, where):
  """Raises if a label is outside [0, num_classes): names the image by its id."""
  labels = np.asarray(labels)
  if len(labels) and labels.max() >= num_classes:
    i = int(np.argmax(labels >= num_classes))
    raise SourceError(f"{where}: label {int(labels[i])} of image {int(ids[i])} is out of range "
                      f"[0, {num_classes})")


@dataclasses.dataclass(frozen=True)
class Part:
  """The images of one input file (or a run of them) and where their labels are."""
  images: object  # ArrayFile or ImageFiles.
  labels: object  # ArrayFile, Values or None.

  @property
  def count(self):
    return self.images.count

  def slice(self, lo, hi):
    return Part(self.images.slice(lo, hi), self.labels and self.labels.slice(lo, hi))

  def read(self, rows):
    """(uint8 images, int64 labels or None) of sorted positions `rows`."""
    return self.read_images(rows), self.read_labels(rows)

  def read_images(self, rows):
    """uint8 images of sorted positions `rows`. This and read_labels are the checks on pixel
    and label values, whichever way the source is read."""
    rows = np.asarray(rows, np.int64)
    return formats.to_uint8(self.images.read(rows), self.images.where, self.images.first + rows)

  def read_labels(self, rows):
    """int64 labels of sorted positions `rows` (None without labels); raises on a negative
    one."""
    if self.labels is None:
      return None
    labels = self.labels.read(rows)
    if len(labels) and labels.min() < 0:
      i = int(np.argmax(labels < 0))
      raise SourceError(f"{self.labels.where}: label {int(labels[i])} of image "
                        f"{self.labels.first + int(rows[i])} is negative")
    return labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Images [start, stop) of a source (ids = the source's indices); pickles small (file names
  and offsets), so a Beam worker reads it on its own."""
  start: int
  stop: int
  pieces: tuple  # Parts, sliced to the chunk.

  def read(self):
    """-> (ids int64 [n], images uint8 [n, H, W, 3], labels int64 [n] or None)."""
    read = [p.read(np.arange(p.count)) for p in self.pieces]
    images = np.concatenate([r[0] for r in read])
    labels = None if read[0][1] is None else np.concatenate([r[1] for r in read])
    return np.arange(self.start, self.stop, dtype=np.int64), images, labels


class Source:
  """Images (and optional labels) addressable by index, from a list of Parts.

  Attributes: `path`, `kind` ('npz', 'npy' or 'image_folder'), `num_images`, `image_shape`
  (H, W, 3), `has_labels`, `labels` (int64 [N] or None; read on first use: 8 bytes an image).
  """

  def __init__(self, path, kind, parts):
    self.path, self.kind = str(path), kind
    shapes = [tuple(p.images.row_shape if isinstance(p.images, ArrayFile) else
                    p.images.image_shape) for p in parts]
    if len(set(shapes)) > 1:
      raise SourceError(f"{path}: files hold images of different shapes " + ", ".join(
          f"{p.images.where}: {s}" for p, s in zip(parts, shapes)))
    # A set whose labels are partial (one .npz of a glob without) has none.
    self.has_labels = bool(parts) and all(p.labels is not None for p in parts)
    self.parts = [p if self.has_labels else Part(p.images, None) for p in parts]
    self._offsets = np.cumsum([0] + [p.count for p in self.parts])
    self.num_images = int(self._offsets[-1])
    if self.num_images == 0:
      raise SourceError(f"{path}: no images")
    self.image_shape = tuple(int(s) for s in shapes[0])
    self._labels = None

  @property
  def labels(self):
    if self.has_labels and self._labels is None:
      self._labels = np.concatenate([p.read_labels(np.arange(p.count)) for p in self.parts])
    return self._labels

  def check_labels(self, num_classes):
    """Raises if a given label is outside [0, num_classes)."""
    if self.has_labels:
      check_label_range(self.labels, np.arange(self.num_images), num_classes, self.path)

  def read(self, start, stop):
    """uint8 [stop - start, H, W, 3]."""
    start, stop = max(0, int(start)), min(int(stop), self.num_images)
    return self._take(np.arange(start, max(start, stop), dtype=np.int64))

  def take(self, indices):
    """uint8 [len(indices), H, W, 3], in the order of `indices` (reads in sorted order)."""
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_images):
      raise IndexError(f"{self.path}: index out of range [0, {self.num_images})")
    order = np.argsort(indices, kind="stable")
    out = np.empty((len(indices),) + self.image_shape, np.uint8)
    out[order] = self._take(indices[order])
    return out

  def batches(self, batch_size, start=0):
    """Yields (first index, uint8 images) in order."""
    for s in range(start, self.num_images, batch_size):
      yield s, self.read(s, s + batch_size)

  def chunks(self, chunk_size):
    """Consecutive chunks of `chunk_size` images (the last may be shorter). A chunk may span
    files, so that chunk boundaries (and a labeller's batches inside them) fall on the same
    indices as `batches`."""
    out = []
    for start in range(0, self.num_images, chunk_size):
      stop = min(start + chunk_size, self.num_images)
      pieces = []
      f = int(np.searchsorted(self._offsets, start, side="right")) - 1
      while f < len(self.parts) and self._offsets[f] < stop:
        lo, hi = max(start, self._offsets[f]), min(stop, self._offsets[f + 1])
        if lo < hi:  # (Files without images hold no piece.)
          pieces.append(self.parts[f].slice(int(lo - self._offsets[f]),
                                            int(hi - self._offsets[f])))
        f += 1
      out.append(Chunk(start, stop, tuple(pieces)))
    return out

  def _take(self, sorted_indices):
    file_of = np.searchsorted(self._offsets, sorted_indices, side="right") - 1
    parts = [self.parts[f].read_images(sorted_indices[file_of == f] - self._offsets[f])
             for f in np.unique(file_of)]
    return np.concatenate(parts) if parts else np.zeros((0,) + self.image_shape, np.uint8)


# ----------------------------------------------------------------------------------------------
# Listing: headers only.


def _npy_header(f, where):
  """(shape, dtype, data offset) of the .npy whose bytes start at f's current position."""
  start = f.tell()
  head = io.BytesIO(f.read(_HEADER_BYTES))
  try:
    shape, fortran, dtype = formats.read_npy_header(head, where)
  except ValueError as e:
    raise SourceError(f"{where}: not a .npy array ({e})") from e
  formats.check_c_order(fortran, where)
  return tuple(shape), dtype, start + head.tell()


def _image_file(path, where, shape, dtype, offset):
  formats.check_image_array(dtype, shape, where)
  return ArrayFile(path, where, offset, tuple(shape[1:]), dtype.str, int(shape[0]))


def _label_file(path, where, shape, dtype, offset, num_images):
  formats.check_label_header(dtype, shape, num_images, where)
  return ArrayFile(path, where, offset, (), dtype.str, num_images)


def _npy_images(path):
  with gfile.GFile(path, "rb") as f:
    shape, dtype, offset = _npy_header(f, path)
  if len(shape) == 3 and shape[-1] == 3:  # One image [H, W, 3] per file.
    shape = (1,) + shape
  return _image_file(path, path, shape, dtype, offset)


def _npz_part(path, cache_dir, image_key="image", label_key="label"):
  try:
    with gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as zf:
      keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
      if image_key not in keys:
        raise SourceError(f"{path}: missing key '{image_key}'; found {keys}. Expected "
                          f"'{image_key}' uint8 [N, H, W, 3] and optionally '{label_key}' int [N]")
      where = f"{path}['{image_key}']"
      info = zf.getinfo(image_key + ".npy")
      if info.compress_type == zipfile.ZIP_STORED:
        f.seek(formats.member_offset(f, info, path))
        shape, dtype, offset = _npy_header(f, where)
        image_path = path
      else:  # np.savez_compressed: no offsets into the deflated stream; extract once.
        image_path = _extract(zf, info, path, cache_dir, where)
        with gfile.GFile(image_path, "rb") as g:
          shape, dtype, offset = _npy_header(g, where)
      if len(shape) and shape[0] == 0:
        raise SourceError(f"{where}: no images")
      images = _image_file(image_path, where, shape, dtype, offset)
      labels = None
      if label_key in keys:
        lwhere = f"{path}['{label_key}']"
        linfo = zf.getinfo(label_key + ".npy")
        if linfo.compress_type == zipfile.ZIP_STORED:
          f.seek(formats.member_offset(f, linfo, path))
          lshape, ldtype, loffset = _npy_header(f, lwhere)
          labels = _label_file(path, lwhere, lshape, ldtype, loffset, images.count)
        else:  # 8 bytes an image: small enough to carry in the chunks.
          with zf.open(linfo) as m:
            arr = np.load(io.BytesIO(m.read()), allow_pickle=False)
          formats.check_label_header(arr.dtype, arr.shape, images.count, lwhere)
          labels = Values(lwhere, arr)
  except zipfile.BadZipFile as e:
    raise SourceError(f"{path}: not an .npz file ({e})") from e
  except KeyError as e:
    raise SourceError(f"{path}: {e}") from e
  return Part(images, labels)


def _extract(zf, info, path, cache_dir, where):
  if cache_dir is None:
    raise SourceError(f"{where} is compressed; give a cache_dir to extract it to (needs "
                      f"{info.file_size} bytes)")
  stat = gfile.stat(path)
  target = fileio.join(cache_dir, f"{posixpath.basename(path)}.{info.filename[:-4]}."
                       f"{stat.length}.{int(stat.mtime_nsec // 10**9)}.npy")
  if not gfile.exists(target):
    with fileio.atomic_path(target) as tmp, zf.open(info) as m, gfile.GFile(tmp, "wb") as out:
      while True:
        block = m.read(formats.COPY_CHUNK)
        if not block:
          break
        out.write(block)
  return target


def _folder_part(root):
  names = sorted(posixpath.relpath(fileio.join(d, n), root)
                 for d, _, files in gfile.walk(root) for n in files
                 if n.lower().endswith(formats.IMAGE_EXTENSIONS))
  if not names:
    raise SourceError(f"{root}: no images (.png, .jpg, .jpeg) found")
  paths = tuple(fileio.join(root, n) for n in names)
  parents = [posixpath.dirname(n) for n in names]
  labels = None
  if all(p.isdigit() for p in parents):
    labels = Values(root, np.array([int(p) for p in parents], np.int64))
  shape = tuple(int(s) for s in _decode(paths[0]).shape)
  return Part(ImageFiles(paths, shape), labels)


def open_npy(paths, label_path=None, name=None):
  """`paths`: .npy files of images, read in the given order as one set; `label_path`: one
  .npy of int labels for all of them (in the same order)."""
  if not paths:
    raise SourceError(f"{name}: no .npy files")
  images = [_npy_images(p) for p in paths]
  labels = [None] * len(images)
  if label_path is not None:
    with gfile.GFile(label_path, "rb") as f:
      lshape, ldtype, loffset = _npy_header(f, label_path)
    whole = _label_file(label_path, label_path, lshape, ldtype, loffset,
                        sum(a.count for a in images))
    offsets = np.cumsum([0] + [a.count for a in images])
    labels = [whole.slice(int(lo), int(hi)) for lo, hi in zip(offsets[:-1], offsets[1:])]
  return Source(name or paths[0], "npy", [Part(a, l) for a, l in zip(images, labels)])


def open_source(path, cache_dir=None):
  """Opens `path` (local, gs://, ram://) as a Source; `cache_dir` (any path) receives the
  compressed .npz members that have to be extracted before they can be read by index."""
  path = str(path)
  layout = formats.resolve(path)
  if layout.kind == "npy":
    return open_npy(list(layout.files), layout.label_file, name=path)
  if layout.kind == "npz":
    return Source(path, "npz", [_npz_part(f, cache_dir) for f in layout.files])
  return Source(path, "image_folder", [_folder_part(path)])
