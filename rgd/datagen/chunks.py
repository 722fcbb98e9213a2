"""Generated-image inputs as chunks of rows that any process can read through tf.io.gfile.

`sources.py` reads a set on one machine by memory-mapping local files (a bucket is first copied
to local disk). A distributed pipeline (rgd.datagen.beam_pipeline) instead lists the input
once, cuts it into chunks of consecutive images, and lets each worker read only its chunk's
bytes, directly from wherever they are (`gs://`, local, `ram://`): a seek and one read per file
a chunk touches for `.npy` files and `np.savez` members, one read per file for PNG/JPEG.

The inputs, their checks and their order are those of `sources.open_source` (both resolve
paths and check headers through rgd.datagen.formats), so an image's id
here is its index there (the single-process path's tie-break key, labeling.rank_order):
  * `.npz`: member `image` (and `label`). A member written by `np.savez_compressed` cannot be
    read at an offset: it is extracted once, streamed, to `extract_dir` (any gfile path);
  * `.npy`: a file, a glob or a folder of `.npy` files in name order; a folder with `image.npy`
    (+ `label.npy`);
  * a folder of PNG/JPEG files, recursive, in name order; integer sub-folder names are labels.
One extension: a glob may also match several `.npz` files (read in name order, as one set),
which `sources.open_source` refuses.
"""
import dataclasses
import io
import posixpath
import zipfile

import numpy as np
import tensorflow as tf

from rgd.runtime import fileio
from rgd.datagen import formats
from rgd.errors import SourceError

gfile = fileio.gfile
_HEADER_BYTES = 4096  # More than any .npy header of a 4-d array needs.


@dataclasses.dataclass(frozen=True)
class Rows:
  """Rows [lo, hi) of a C-ordered array whose row 0 starts at byte `offset` of `path`."""
  path: str
  where: str  # For messages: "x.npz['image']".
  offset: int
  row_shape: tuple
  dtype: str
  lo: int
  hi: int

  def read(self):
    dtype = np.dtype(self.dtype)
    row = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
    size = (self.hi - self.lo) * row
    with gfile.GFile(self.path, "rb") as f:
      f.seek(self.offset + self.lo * row)
      data = f.read(size)
    if len(data) != size:
      raise SourceError(f"{self.where}: file is shorter than its header says")
    return np.frombuffer(data, dtype).reshape((self.hi - self.lo,) + tuple(self.row_shape))


@dataclasses.dataclass(frozen=True)
class Files:
  """Encoded images (PNG/JPEG), one per file."""
  paths: tuple
  image_shape: tuple

  def read(self):
    out = np.empty((len(self.paths),) + tuple(self.image_shape), np.uint8)
    for j, name in enumerate(self.paths):
      try:
        image = tf.io.decode_image(fileio.read_bytes(name), channels=3, dtype=tf.uint8,
                                   expand_animations=False).numpy()
      except (tf.errors.OpError, OSError) as e:
        raise SourceError(f"{name}: cannot decode image ({e})") from e
      if image.shape != tuple(self.image_shape):
        raise SourceError(f"{name}: image of shape {image.shape}, expected "
                          f"{tuple(self.image_shape)} like the first image")
      out[j] = image
    return out


@dataclasses.dataclass(frozen=True)
class Piece:
  """The images of one input file that fall in a chunk, and where their labels are."""
  images: object  # Rows or Files.
  labels: object  # Rows, a tuple of ints, or None.
  first: int  # Index of the first image within its file (for messages).


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Images [start, stop) of the whole input (ids = sources.open_source indices)."""
  start: int
  stop: int
  pieces: tuple

  def read(self):
    """-> (ids int64 [n], images uint8 [n, H, W, 3], labels int64 [n] or None)."""
    images, labels = [], []
    for p in self.pieces:
      raw = p.images.read()
      where = p.images.where if isinstance(p.images, Rows) else p.images.paths[0]
      rows = np.arange(p.first, p.first + len(raw))
      images.append(formats.to_uint8(raw, where, rows))
      if p.labels is None:
        labels.append(None)
      else:
        lab = p.labels.read() if isinstance(p.labels, Rows) else np.asarray(p.labels)
        if not np.issubdtype(lab.dtype, np.integer):
          raise SourceError(f"{p.labels.where}: labels must be integers, got {lab.dtype}")
        if len(lab) and lab.min() < 0:
          i = int(np.argmax(lab < 0))
          raise SourceError(f"{getattr(p.labels, 'where', where)}: label {int(lab[i])} of "
                            f"image {p.first + i} is negative")
        labels.append(lab.astype(np.int64))
    ids = np.arange(self.start, self.stop, dtype=np.int64)
    images = images[0] if len(images) == 1 else np.concatenate(images)
    if any(l is None for l in labels):
      return ids, images, None
    return ids, images, np.concatenate(labels)


class _Part:
  """One input file: `count` images; `piece(lo, hi)` describes rows [lo, hi) of it."""

  def __init__(self, count, piece):
    self.count = count
    self.piece = piece


@dataclasses.dataclass
class Listing:
  """What `list_input` found: the parts in id order, and the set's shape."""
  path: str
  kind: str
  parts: list
  image_shape: tuple
  has_labels: bool

  @property
  def num_images(self):
    return sum(p.count for p in self.parts)

  def chunks(self, chunk_size):
    """Consecutive chunks of `chunk_size` images (the last may be shorter); a chunk may span
    files, so that chunk boundaries (and the labeller's batches inside them) fall on the same
    indices as the single-process path's batches."""
    offsets = np.cumsum([0] + [p.count for p in self.parts])
    has_labels = self.has_labels  # A set whose labels are partial has none (as sources).
    out = []
    for start in range(0, int(offsets[-1]), chunk_size):
      stop = min(start + chunk_size, int(offsets[-1]))
      pieces = []
      for f, part in enumerate(self.parts):
        lo, hi = max(start, offsets[f]), min(stop, offsets[f + 1])
        if lo < hi:
          piece = part.piece(int(lo - offsets[f]), int(hi - offsets[f]))
          pieces.append(piece if has_labels else dataclasses.replace(piece, labels=None))
      out.append(Chunk(start, stop, tuple(pieces)))
    return out


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


def _image_rows(path, where, shape, dtype, offset):
  if len(shape) == 3:  # One image per file, as sources.open_npy.
    shape = (1,) + shape
  formats.check_image_array(dtype, shape, where)
  return shape, lambda lo, hi: Rows(path, where, offset, shape[1:], dtype.str, lo, hi)


def _label_rows(path, where, shape, dtype, offset, num_images):
  formats.check_label_header(dtype, shape, num_images, where)
  return lambda lo, hi: Rows(path, where, offset, (), dtype.str, lo, hi)


def _npy_part(path, label_path=None):
  with gfile.GFile(path, "rb") as f:
    shape, dtype, offset = _npy_header(f, path)
  shape, images = _image_rows(path, path, shape, dtype, offset)
  labels = None
  if label_path is not None:
    with gfile.GFile(label_path, "rb") as f:
      lshape, ldtype, loffset = _npy_header(f, label_path)
    labels = _label_rows(label_path, label_path, lshape, ldtype, loffset, shape[0])
  return _Part(shape[0], lambda lo, hi: Piece(images(lo, hi), labels and labels(lo, hi), lo))




def _npz_part(path, extract_dir, image_key="image", label_key="label"):
  try:
    with gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as zf:
      keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
      if image_key not in keys:
        raise SourceError(f"{path}: missing key '{image_key}'; found {keys}. Expected "
                          f"'{image_key}' uint8 [N, H, W, 3] and optionally '{label_key}' int [N]")
      where = f"{path}['{image_key}']"
      info = zf.getinfo(image_key + ".npy")
      if info.compress_type == zipfile.ZIP_STORED:
        base = formats.member_offset(f, info, path)
        f.seek(base)
        shape, dtype, offset = _npy_header(f, where)
        image_path = path
      else:  # np.savez_compressed: no offsets into the deflated stream; extract once.
        image_path = _extract(zf, info, path, extract_dir, where)
        with gfile.GFile(image_path, "rb") as g:
          shape, dtype, offset = _npy_header(g, where)
      if len(shape) and shape[0] == 0:
        raise SourceError(f"{where}: no images")
      shape, images = _image_rows(image_path, where, shape, dtype, offset)
      labels = None
      if label_key in keys:
        lwhere = f"{path}['{label_key}']"
        linfo = zf.getinfo(label_key + ".npy")
        if linfo.compress_type == zipfile.ZIP_STORED:
          f.seek(formats.member_offset(f, linfo, path))
          lshape, ldtype, loffset = _npy_header(f, lwhere)
          labels = _label_rows(path, lwhere, lshape, ldtype, loffset, shape[0])
        else:  # 8 bytes an image: small enough to carry in the chunks.
          with zf.open(linfo) as m:
            arr = np.load(io.BytesIO(m.read()), allow_pickle=False)
          _label_rows(path, lwhere, arr.shape, arr.dtype, 0, shape[0])  # Checks only.
          labels = lambda lo, hi: tuple(int(v) for v in arr[lo:hi])
  except zipfile.BadZipFile as e:
    raise SourceError(f"{path}: not an .npz file ({e})") from e
  except KeyError as e:
    raise SourceError(f"{path}: {e}") from e
  return _Part(shape[0], lambda lo, hi: Piece(images(lo, hi), labels and labels(lo, hi), lo))


def _extract(zf, info, path, extract_dir, where):
  if extract_dir is None:
    raise SourceError(f"{where} is compressed; give a folder to extract it to (needs "
                      f"{info.file_size} bytes)")
  stat = gfile.stat(path)
  target = fileio.join(extract_dir, f"{posixpath.basename(path)}.{info.filename}."
                       f"{stat.length}.{int(stat.mtime_nsec // 10**9)}")
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
  paths = [fileio.join(root, n) for n in names]
  parents = [posixpath.dirname(n) for n in names]
  labels = [int(p) for p in parents] if all(p.isdigit() for p in parents) else None
  try:
    first = tf.io.decode_image(fileio.read_bytes(paths[0]), channels=3,
                               expand_animations=False).shape
  except tf.errors.OpError as e:
    raise SourceError(f"{paths[0]}: cannot decode image ({e})") from e
  shape = tuple(int(s) for s in first)
  part = _Part(len(paths), lambda lo, hi: Piece(
      Files(tuple(paths[lo:hi]), shape), None if labels is None else tuple(labels[lo:hi]), lo))
  return part, shape


def list_input(path, extract_dir=None):
  """Lists `path` (the formats of sources.open_source, plus globs of .npz) -> Listing.

  Reads only headers (and, for image folders, the first image); `extract_dir` receives the
  compressed .npz members it has to extract."""
  path = str(path)
  layout = formats.resolve(path, gfile.exists, gfile.isdir, gfile.glob, fileio.join)
  kind = layout.kind
  if kind == "npy":
    label_files = [layout.label_file] + [None] * (len(layout.files) - 1)
    parts = [_npy_part(f, label) for f, label in zip(layout.files, label_files)]
  elif kind == "npz":
    parts = [_npz_part(f, extract_dir) for f in layout.files]
  else:
    part, _ = _folder_part(path)
    parts = [part]
  empty = [p.piece(0, 0) for p in parts]
  shapes = {tuple(e.images.row_shape) if isinstance(e.images, Rows) else
            tuple(e.images.image_shape) for e in empty}
  if len(shapes) > 1:
    raise SourceError(f"{path}: files hold images of different shapes {sorted(shapes)}")
  listing = Listing(path, kind, parts, shapes.pop(), all(e.labels is not None for e in empty))
  if listing.num_images == 0:
    raise SourceError(f"{path}: no images")
  return listing
