"""The on-disk formats of generated images: which layout a path is, and the header checks.

rgd.datagen.sources reads these formats; this module holds what is known before any pixel is
read: which layout a path is (`resolve`, through the given file-system functions), the checks
of a header, the .npy header, and where a stored member's bytes start inside an .npz (a zip).
Formats:
  * `.npz` with `image` uint8 [N, H, W, 3] and optional `label` int [N] (docs/recipes.md
    "Generated data");
  * `.npy`: a file, a glob or a folder of `.npy` files in name order; a folder with `image.npy`
    (+ `label.npy`) is read like an unzipped .npz;
  * a folder of PNG/JPEG files, recursive, in name order; integer sub-folder names are labels.
Everything is read with allow_pickle=False; bad input raises SourceError naming the file.
"""
import dataclasses
import struct

import numpy as np

from rgd.errors import SourceError
from rgd.runtime import fileio

gfile = fileio.gfile

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
COPY_CHUNK = 64 << 20  # Bytes per read when extracting a compressed .npz member.


@dataclasses.dataclass(frozen=True)
class Layout:
  """What `resolve` found: `kind` ('npy', 'npz' or 'image_folder'), the files in reading order
  (the folder itself for 'image_folder'), and the label file of an `image.npy` folder."""
  kind: str
  files: tuple
  label_file: str = None


def resolve(path):
  """The layout of `path` (any filesystem, through tf.io.gfile). A glob may match .npy files
  or .npz files (read in name order as one set)."""
  exists, isdir, glob, join = gfile.exists, gfile.isdir, gfile.glob, fileio.join
  if any(c in path for c in "*?["):
    files = tuple(sorted(glob(path)))
    if not files:
      raise SourceError(f"{path}: no files match")
    for kind in ("npy", "npz"):
      if all(f.endswith("." + kind) for f in files):
        return Layout(kind, files)
    raise SourceError(f"{path}: a glob must match .npy files only or .npz files only")
  if not exists(path):
    raise SourceError(f"{path}: not found")
  if isdir(path):
    image_npy, label_npy = join(path, "image.npy"), join(path, "label.npy")
    if exists(image_npy):
      return Layout("npy", (image_npy,), label_npy if exists(label_npy) else None)
    npys = tuple(sorted(glob(join(path, "*.npy"))))
    if npys:
      return Layout("npy", npys)
    return Layout("image_folder", (path,))
  for kind in ("npz", "npy"):
    if path.endswith("." + kind):
      return Layout(kind, (path,))
  raise SourceError(f"{path}: unknown format; expected an .npz, .npy file(s) or a folder of "
                    "PNG/JPEG images")


def check_image_array(dtype, shape, where):
  """Checks dtype and shape from a header, before any pixel is read."""
  dtype = np.dtype(dtype)
  if dtype.hasobject:
    raise SourceError(f"{where}: holds Python objects (dtype {dtype}); images must be uint8 "
                      "[N, H, W, 3] (files are read with allow_pickle=False)")
  if np.issubdtype(dtype, np.floating):
    raise SourceError(f"{where}: images are {dtype}; expected uint8 in [0, 255]. Convert float "
                      "images in [0, 1] with np.round(x * 255).astype(np.uint8)")
  if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
    raise SourceError(f"{where}: images are {dtype}; expected uint8 in [0, 255]")
  if len(shape) != 4 or shape[-1] != 3:
    raise SourceError(f"{where}: images must have shape [N, H, W, 3], got {tuple(shape)}")


def to_uint8(images, where, indices):
  """Integer images in [0, 255] -> uint8; anything else is an error naming the first bad
  image (by its index in the file, from `indices`)."""
  if images.dtype == np.uint8:
    return np.asarray(images)
  images = np.asarray(images)
  bad = np.flatnonzero(((images < 0) | (images > 255)).reshape(len(images), -1).any(axis=1))
  if bad.size:
    i = int(bad[0])
    raise SourceError(f"{where}: image {int(indices[i])} has values in [{images[i].min()}, "
                      f"{images[i].max()}]; expected [0, 255] (uint8)")
  return images.astype(np.uint8)


def check_label_header(dtype, shape, num_images, where):
  if not np.issubdtype(dtype, np.integer):
    raise SourceError(f"{where}: labels must be integers, got {dtype}")
  if tuple(shape) != (num_images,):
    raise SourceError(f"{where}: labels must have shape [{num_images}] to match the images, "
                      f"got {tuple(shape)}")


def read_npy_header(fp, where):
  """(shape, fortran_order, dtype) of the .npy whose bytes start at fp's position; fp is left
  at the first data byte."""
  try:
    version = np.lib.format.read_magic(fp)
  except ValueError as e:
    raise SourceError(f"{where}: not a .npy array ({e})") from e
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(fp)
  if version == (2, 0):
    return np.lib.format.read_array_header_2_0(fp)
  raise SourceError(f"{where}: unsupported .npy format version {version}")


def check_c_order(fortran_order, where):
  if fortran_order:
    raise SourceError(f"{where}: Fortran-ordered arrays are not supported; save with "
                      "np.ascontiguousarray(images)")


def member_offset(f, info, where):
  """Byte offset of a stored zip member's data in the open file `f`: after its local header,
  whose name and extra fields may differ in length from the central directory's."""
  f.seek(info.header_offset)
  header = f.read(30)
  if header[:4] != b"PK\x03\x04":
    raise SourceError(f"{where}: corrupt zip (bad local header of {info.filename})")
  name_len, extra_len = struct.unpack("<HH", header[26:30])
  return info.header_offset + 30 + name_len + extra_len
