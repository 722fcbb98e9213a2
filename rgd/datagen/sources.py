"""Generated images on disk, read in batches or by index without loading the whole set.

Formats (`open_source(path)` picks one):
  * `.npz` with `image` uint8 [N, H, W, 3] and optional `label` int [N] (the layout of
    DeepMind's and DM-Improves-AT's published sets, docs/recipes.md "Generated data"). `np.load` of an
    .npz reads a whole member, so the `image` member is read with `numpy.lib.format` instead:
    a member written by `np.savez` is stored uncompressed inside the zip and is memory-mapped
    where it lies; a member written by `np.savez_compressed` is first extracted once, streamed,
    to `cache_dir` as a plain .npy (N * H * W * 3 bytes of disk) and memory-mapped from there.
  * `.npy`: one file, a glob (`'samples/*.npy'`) or a folder of .npy files, each uint8
    [n, H, W, 3], read in name order as one set, memory-mapped (`mmap_mode='r'`). A folder that
    holds `image.npy` (and optionally `label.npy`) is read like an unzipped .npz.
  * a folder of PNG/JPEG files (searched recursively, name order), decoded with
    `tf.io.decode_image`. If every file sits in a sub-folder named by an integer
    (`DIR/3/x.png`), that integer is its label.

Every source is addressable by index (`read(start, stop)`, `take(indices)`), which the writer
needs to spread classes over shards. Everything is read with `allow_pickle=False`. Bad input
raises `SourceError` naming the file: float images, values outside [0, 255], wrong shapes,
missing keys, no images, labels that are not integers in range.
"""
import glob
import os
import tempfile
import zipfile

import numpy as np
import tensorflow as tf

from rgd.datagen import formats
from rgd.errors import SourceError
from rgd.runtime import fileio










class Source:
  """Images (and optional labels) addressable by index.

  Attributes: `path`, `kind`, `num_images`, `image_shape` (H, W, 3), `labels` (int64 [N] or
  None).
  """
  kind = "?"

  def __init__(self, path, num_images, image_shape, labels=None):
    self.path = path
    self.num_images = int(num_images)
    self.image_shape = tuple(int(s) for s in image_shape)
    if self.num_images == 0:
      raise SourceError(f"{path}: no images")
    self.labels = None if labels is None else formats.check_labels(labels, self.num_images, path)

  def check_labels(self, num_classes):
    """Raises if a given label is outside [0, num_classes)."""
    if self.labels is not None and self.labels.max() >= num_classes:
      i = int(np.argmax(self.labels >= num_classes))
      raise SourceError(f"{self.path}: label {int(self.labels[i])} of image {i} is out of range "
                        f"[0, {num_classes})")

  def read(self, start, stop):
    """uint8 [stop - start, H, W, 3]."""
    start, stop = max(0, int(start)), min(int(stop), self.num_images)
    return self._read(start, stop)

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

  def describe(self):
    return {"kind": self.kind, "path": os.path.abspath(self.path), "num_images": self.num_images,
            "image_shape": list(self.image_shape), "has_labels": self.labels is not None}

  def _read(self, start, stop):
    raise NotImplementedError

  def _take(self, sorted_indices):
    raise NotImplementedError


class ArraySource(Source):
  """One or more arrays [n_i, H, W, 3] (memory-mapped or in memory) read as one set."""
  kind = "npy"

  def __init__(self, path, arrays, names, labels=None):
    for a, name in zip(arrays, names):
      formats.check_image_array(a.dtype, a.shape, name)
    shapes = {tuple(a.shape[1:]) for a in arrays}
    if len(shapes) > 1:
      raise SourceError(f"{path}: files hold images of different shapes "
                        + ", ".join(f"{n}: {tuple(a.shape[1:])}" for a, n in zip(arrays, names)))
    self._arrays, self._names = list(arrays), list(names)
    self._offsets = np.cumsum([0] + [len(a) for a in arrays])
    super().__init__(path, self._offsets[-1], arrays[0].shape[1:] if arrays else (0, 0, 3),
                     labels)

  def _rows(self, f, local):
    """Rows `local` (sorted int64) of array f. Memory-mapped files are read with os.pread,
    one call per run of consecutive rows, instead of through the mapping: random rows through
    a mapping fault in (and keep resident) the pages around every row, which for a shard of
    random rows is most of the file."""
    a = self._arrays[f]
    if not (isinstance(a, np.memmap) and a.flags.c_contiguous and a.filename):
      return formats.to_uint8(a[local], self._names[f], local)
    row = int(np.prod(a.shape[1:])) * a.dtype.itemsize
    out = bytearray(len(local) * row)
    breaks = np.flatnonzero(np.diff(local) != 1) + 1
    fd = os.open(a.filename, os.O_RDONLY)  # local only
    try:
      pos = 0
      for run in np.split(local, breaks):
        if not len(run):
          continue
        size = len(run) * row
        chunk = os.pread(fd, size, a.offset + int(run[0]) * row)
        if len(chunk) != size:
          raise SourceError(f"{self._names[f]}: file is shorter than its header says")
        out[pos:pos + size] = chunk
        pos += size
    finally:
      os.close(fd)
    rows = np.frombuffer(out, a.dtype).reshape((len(local),) + a.shape[1:])
    return formats.to_uint8(rows, self._names[f], local)

  def _read(self, start, stop):
    parts = []
    for f in range(len(self._arrays)):
      lo, hi = max(start, self._offsets[f]), min(stop, self._offsets[f + 1])
      if lo < hi:
        off = self._offsets[f]
        parts.append(self._rows(f, np.arange(lo - off, hi - off)))
    if not parts:
      return np.zeros((0,) + self.image_shape, np.uint8)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

  def _take(self, sorted_indices):
    file_of = np.searchsorted(self._offsets, sorted_indices, side="right") - 1
    parts = []
    for f in np.unique(file_of):
      parts.append(self._rows(f, sorted_indices[file_of == f] - self._offsets[f]))
    return np.concatenate(parts) if parts else np.zeros((0,) + self.image_shape, np.uint8)


# ----------------------------------------------------------------------------------------------
# .npz: the `image` member, memory-mapped inside the zip or extracted once.






def _npz_image_array(path, key, cache_dir):
  """Memory-mapped array of member `key` of the .npz at `path`."""
  where = f"{path}['{key}']"
  with zipfile.ZipFile(path) as zf:
    info = zf.getinfo(key + ".npy")
    with zf.open(info) as member:
      shape, fortran_order, dtype = formats.read_npy_header(member, where)
      header_len = member.tell()
    formats.check_image_array(dtype, shape, where)
    if shape[0] == 0:
      raise SourceError(f"{where}: no images")
    formats.check_c_order(fortran_order, where)
    if info.compress_type == zipfile.ZIP_STORED:
      with open(path, "rb") as f:  # local only
        offset = formats.member_offset(f, info, path) + header_len
      return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
    # Compressed member (np.savez_compressed): extract once, streaming, then memory-map.
    if cache_dir is None:
      raise SourceError(f"{where} is compressed; give a cache_dir to extract it to (needs "
                        f"{info.file_size} bytes)")
    os.makedirs(cache_dir, exist_ok=True)  # local only
    stat = os.stat(path)  # local only
    cached = os.path.join(cache_dir, f"{os.path.basename(path)}.{key}.{stat.st_size}."
                          f"{int(stat.st_mtime)}.npy")
    if not os.path.exists(cached):  # local only
      tmp = cached + ".tmp"
      with zf.open(info) as member, open(tmp, "wb") as out:  # local only
        while True:
          chunk = member.read(formats.COPY_CHUNK)
          if not chunk:
            break
          out.write(chunk)
      os.replace(tmp, cached)  # local only
  return np.load(cached, mmap_mode="r", allow_pickle=False)  # local only


def open_npz(path, cache_dir=None, image_key="image", label_key="label"):
  if not os.path.isfile(path):  # local only
    raise SourceError(f"{path}: file not found")
  try:
    with zipfile.ZipFile(path) as zf:
      keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
  except zipfile.BadZipFile as e:
    raise SourceError(f"{path}: not an .npz file ({e})") from e
  if image_key not in keys:
    raise SourceError(f"{path}: missing key '{image_key}'; found {keys}. Expected "
                      f"'{image_key}' uint8 [N, H, W, 3] and optionally '{label_key}' int [N]")
  images = _npz_image_array(path, image_key, cache_dir)
  labels = None
  if label_key in keys:
    with np.load(path, allow_pickle=False) as f:  # local only
      labels = f[label_key]  # Reads only this member: 8 bytes an image.
  source = ArraySource(path, [images], [f"{path}['{image_key}']"], labels)
  source.kind = "npz"
  return source


# ----------------------------------------------------------------------------------------------
# .npy files.


def open_npy(paths, label_path=None, name=None):
  """`paths`: .npy files of images, read in the given order as one set."""
  if not paths:
    raise SourceError(f"{name}: no .npy files")
  arrays = []
  for p in paths:
    try:
      a = np.load(p, mmap_mode="r", allow_pickle=False)  # local only
    except ValueError as e:
      raise SourceError(f"{p}: cannot read as .npy without pickle ({e})") from e
    if a.ndim == 3:  # One image per file.
      a = a[None]
    arrays.append(a)
  labels = None
  if label_path is not None:
    labels = np.load(label_path, allow_pickle=False)  # local only
  return ArraySource(name or paths[0], arrays, list(paths), labels)


# ----------------------------------------------------------------------------------------------
# Folders of PNG/JPEG files.


class ImageFolderSource(Source):
  kind = "image_folder"

  def __init__(self, path):
    files = sorted(
        os.path.relpath(os.path.join(root, f), path)
        for root, _, names in os.walk(path) for f in names  # local only
        if f.lower().endswith(formats.IMAGE_EXTENSIONS))
    if not files:
      raise SourceError(f"{path}: no images (.png, .jpg, .jpeg) found")
    self._files = [os.path.join(path, f) for f in files]
    labels = None
    parents = [os.path.dirname(f) for f in files]
    if all(p.isdigit() for p in parents):
      labels = np.array([int(p) for p in parents], np.int64)
    first = self._decode(0)
    super().__init__(path, len(files), first.shape, labels)

  def _decode(self, i):
    name = self._files[i]
    try:
      with open(name, "rb") as f:  # local only
        data = f.read()
      image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    except (tf.errors.OpError, OSError) as e:
      raise SourceError(f"{name}: cannot decode image ({e})") from e
    image = image.numpy()
    if getattr(self, "image_shape", None) and image.shape != self.image_shape:
      raise SourceError(f"{name}: image of shape {image.shape}, expected {self.image_shape} like "
                        "the first image")
    return image

  def _read(self, start, stop):
    return self._take(np.arange(start, stop))

  def _take(self, sorted_indices):
    out = np.empty((len(sorted_indices),) + self.image_shape, np.uint8)
    for j, i in enumerate(sorted_indices):
      out[j] = self._decode(int(i))
    return out


# ----------------------------------------------------------------------------------------------


def stage_locally(path, cache_dir=None):
  """A local copy of a remote (gs://, ...) input: a file, a folder or a glob of files, copied
  once through tf.io.gfile into `cache_dir` (a new temporary folder by default). Sources read
  local files by memory-mapping them (random rows of a 100M-image set without reading it all),
  which a bucket cannot do; local paths are returned unchanged."""
  if not fileio.is_remote(path):
    return path
  gfile = fileio.gfile
  root = cache_dir or tempfile.mkdtemp(prefix="rgd-staged-")
  local = os.path.join(root, "staged", path.replace("://", "/").strip("/"))  # local only
  pattern = any(c in path for c in "*?[")
  files = gfile.glob(path) if pattern else ([path] if not gfile.isdir(path) else [
      fileio.join(d, f) for d, _, names in gfile.walk(path) for f in names])
  if not files:
    raise SourceError(f"{path}: no files match" if pattern else f"{path}: not found")
  base = os.path.dirname(path) if pattern else path
  for f in files:
    target = local if f == path else os.path.join(
        os.path.dirname(local) if pattern else local, os.path.relpath(f, base))
    os.makedirs(os.path.dirname(target), exist_ok=True)  # local only: the staging cache
    if not os.path.exists(target):  # local only
      gfile.copy(f, target + ".tmp", overwrite=True)
      os.replace(target + ".tmp", target)  # local only
  return local if not pattern else os.path.join(os.path.dirname(local), os.path.basename(path))


def open_source(path, cache_dir=None):
  """Opens `path` as a source of generated images (formats: rgd.datagen.formats); remote paths
  are first copied to `cache_dir` (`stage_locally`)."""
  path = stage_locally(path, cache_dir)
  layout = formats.resolve(path, os.path.exists, os.path.isdir, glob.glob,  # local only
                           os.path.join)
  if layout.kind == "npy":
    return open_npy(list(layout.files), layout.label_file, name=path)
  if layout.kind == "image_folder":
    return ImageFolderSource(path)
  if len(layout.files) > 1:
    raise SourceError(f"{path}: a glob of .npz files is read by the distributed pipeline only "
                      "(tools/make_tfrecords.py --runner); give one .npz here")
  return open_npz(layout.files[0], cache_dir)
