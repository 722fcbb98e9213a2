"""Reading and writing other frameworks' weight files safely, through tf.io.gfile.

A `.pt` file is a pickle, and unpickling runs whatever code the file names. So:

- `.pt` / `.pth`: `torch.load(weights_only=True)`, PyTorch's own restricted unpickler (tensors,
  plain containers); anything else in the file is refused.
- `.safetensors`: no code at all (safetensors.numpy).
- `.npy` (DeepMind's JAX checkpoints are a pickled mapping saved with np.save): the header is
  read with numpy; an object array's pickle goes through `_ArrayUnpickler`, which admits numpy
  arrays, dtypes and plain mappings and refuses every other global before it is looked up.
  Plain numeric `.npy` files load with allow_pickle=False.

torch and safetensors are optional (`pip install -e ".[torch]"`) and imported only here, when
such a file is read or written. Every refusal is a DataError naming the file.
"""
import importlib
import io
import pickle

import numpy as np
import tensorflow as tf

from rgd.errors import ConfigError, DataError
from rgd.runtime import fileio

SUFFIXES = (".pt", ".pth", ".safetensors", ".npy")

# What a pickled numpy array (or mapping of them) needs: numpy reconstructs arrays from
# `_reconstruct(ndarray, ...)` + `dtype` + `__setstate__`, and scalars from `scalar`; plain
# mappings are dict literals (no global) or OrderedDict. numpy 2 moved `core` to `_core`.
_ALLOWED_GLOBALS = frozenset([
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
])


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and mappings only; every other global is refused unresolved."""

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global '{module}.{name}' is not a numpy array or mapping")


def _read_bytes(path):
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: no such file")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def _flatten(tree, path, prefix=""):
  """{'a/b': array} of nested mappings of arrays; DataError for any other leaf."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, dict):
      out.update(_flatten(v, path, key))
    elif isinstance(v, np.ndarray) or np.isscalar(v):
      out[key] = np.asarray(v)
    else:
      raise DataError(f"{path}: entry {key!r} is a {type(v).__name__}, not an array")
  return out


def read_npy(path, data=None):
  """A mapping of arrays from a `.npy` file: a pickled (object) array through the restricted
  unpickler, anything numeric with allow_pickle=False."""
  data = _read_bytes(path) if data is None else data
  f = io.BytesIO(data)
  try:
    version = np.lib.format.read_magic(f)
    header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
              np.lib.format.read_array_header_2_0)
    shape, _, dtype = header(f, max_header_size=100_000)
  except ValueError as e:
    raise DataError(f"{path}: not a .npy file ({e})") from e
  if not dtype.hasobject:
    return {"array": np.load(io.BytesIO(data), allow_pickle=False)}
  try:
    obj = _ArrayUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise DataError(f"{path}: refused: a .npy file may hold only numpy arrays and plain "
                    f"mappings of them ({e})") from e
  obj = np.asarray(obj).reshape(shape) if isinstance(obj, np.ndarray) else obj
  if isinstance(obj, np.ndarray) and obj.shape == ():
    obj = obj.item()
  if not isinstance(obj, dict):
    raise DataError(f"{path}: expected a mapping of arrays, got {type(obj).__name__}")
  return _flatten(obj, path)


def _optional(module, path):
  """The optional dependency `module` (torch, safetensors), or a ConfigError naming the file
  that needs it and how to install it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f"{path}: reading or writing it needs {module.split('.')[0]} ({e}): "
                      "pip install -e \".[torch]\"") from e


def read_state_dict(path):
  """{name: numpy array} of a `.pt`/`.pth`, `.safetensors` or `.npy` file, read safely."""
  lower = path.lower()
  if lower.endswith(".npy"):
    return read_npy(path)
  if lower.endswith(".safetensors"):
    safetensors_numpy = _optional("safetensors.numpy", path)
    data = _read_bytes(path)
    try:
      return dict(safetensors_numpy.load(data))
    except Exception as e:  # pylint: disable=broad-except  safetensors raises its own errors
      raise DataError(f"{path}: not a readable safetensors file ({e})") from e
  if lower.endswith((".pt", ".pth")):
    return read_torch(path)
  raise DataError(f"{path}: unknown weight file type; expected one of {SUFFIXES}")


def read_torch(path):
  """{name: numpy array} of a PyTorch file of any name (`.pt`, `.pth`, DeepAugment's `.state`),
  read with torch.load(weights_only=True)."""
  data = _read_bytes(path)
  torch = _optional("torch", path)
  try:
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{path}: refused: torch.load(weights_only=True) admits tensors and plain "
                    f"containers only ({first[:300]})") from e
  if not isinstance(obj, dict):
    raise DataError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return _tensors_to_numpy(obj, path)


def _tensors_to_numpy(obj, path):
  torch = _optional("torch", path)
  # Checkpoints that wrap the state dict: RobustBench's {'state_dict': ..., 'epoch': 3}, and
  # {'model': ...} / {'model_state_dict': ...} of other training scripts.
  for key in ("state_dict", "model_state_dict", "model"):
    if isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not obj:
    raise DataError(f"{path}: no tensors in the state dict")
  others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
  if others:
    raise DataError(f"{path}: expected a state dict (name -> tensor); {others[0]!r} is a "
                    f"{type(obj[others[0]]).__name__}")
  return {k: v.detach().cpu().numpy() for k, v in obj.items()}


def write_state_dict(path, state):
  """Writes {name: numpy array} as `.pt` (torch.save of tensors) or `.safetensors`."""
  lower = path.lower()
  if lower.endswith(".safetensors"):
    data = _optional("safetensors.numpy", path).save(
        {k: np.ascontiguousarray(v) for k, v in state.items()})
  elif lower.endswith((".pt", ".pth")):
    torch = _optional("torch", path)
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, buf)
    data = buf.getvalue()
  else:
    raise ConfigError(f"{path}: write .pt, .pth or .safetensors")
  fileio.atomic_write_bytes(path, data)
