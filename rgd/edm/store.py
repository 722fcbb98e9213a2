"""A trained generator on disk: DIR/generator.json (how to rebuild F) + DIR/generator.npz (the
EMA weights), written atomically through tf.io.gfile by rgd.train_generator and read by the
sampling job (`tools/make_tfrecords.py --generator=edm:DIR`), tools/fid.py and the benchmark.

The network is rebuilt from `edm_unet`'s keyword arguments rather than saved as a .keras file:
the U-Net has Lambda layers, which Keras refuses to deserialise without `safe_mode=False`
(arbitrary code), and rgd never unpickles user files.
"""
import inspect

import gin
import numpy as np

from rgd.runtime import fileio
from rgd.errors import ConfigError, DataError
from rgd.edm import adm, unet

CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "generator.npz"
# 2: DDPM++ exactly as NVlabs/edm's SongUNet: embedding added before norm1, EDM's attention
# placement and initialisation, the augmentation-label input. A version-1 generator (an
# earlier U-Net) has other weights and cannot be loaded into this network.
FORMAT_VERSION = 2


# F's architecture by name (NVlabs/edm train.py --arch): DDPM++ (SongUNet) or ADM
# (DhariwalUNet). A generator.json without "arch" is DDPM++.
ARCHITECTURES = {"ddpmpp": unet.edm_unet, "adm": adm.adm_unet}


@gin.configurable
def generator_architecture(name="ddpmpp"):
  """The network rgd.train_generator trains (`generator_architecture.name = 'adm'` in gin);
  its size comes from the gin bindings of that builder (edm_unet or adm_unet)."""
  if name not in ARCHITECTURES:
    raise ConfigError(f"generator_architecture.name={name!r}: expected one of "
                      f"{sorted(ARCHITECTURES)}")
  return name


def unet_kwargs(image_shape, num_classes):
  """The keyword arguments the chosen builder gets under the current gin config (its defaults,
  then the gin bindings, then the data's image shape and classes), JSON-able; "arch" names the
  builder unless it is DDPM++ (whose generator.json files predate the choice)."""
  arch = generator_architecture()
  builder = ARCHITECTURES[arch]
  kwargs = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
  kwargs.update(gin.get_bindings(builder))
  kwargs.update(image_shape=tuple(int(s) for s in image_shape), num_classes=int(num_classes))
  if arch != "ddpmpp":
    kwargs["arch"] = arch
  return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def build(kwargs):
  """F from saved keyword arguments (lists back to tuples)."""
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  arch = kwargs.pop("arch", "ddpmpp")
  if arch not in ARCHITECTURES:
    raise DataError(f"generator architecture {arch!r}: this rgd builds {sorted(ARCHITECTURES)}")
  return ARCHITECTURES[arch](**kwargs)   # every argument explicit: gin's bindings do not apply


def save(model_dir, network, kwargs, info):
  """Writes the weights first and the config last, so a folder with generator.json is whole."""
  fileio.save_npz(fileio.join(model_dir, WEIGHTS_FILE),
                  **{f"w{i:04d}": np.asarray(w) for i, w in enumerate(network.get_weights())})
  fileio.atomic_write_json(fileio.join(model_dir, CONFIG_FILE),
                           dict(info, format_version=FORMAT_VERSION, unet=kwargs,
                                weights="exponential moving average"))


def load_info(model_dir):
  """The generator.json of `model_dir` (num_classes, image_shape, unet, step, ...)."""
  config_path = fileio.join(model_dir, CONFIG_FILE)
  if not fileio.gfile.exists(config_path):
    raise DataError(f"{config_path}: not found; train a generator with `python -m "
                    "rgd.train_generator --model_dir=DIR` first")
  return fileio.read_json(config_path)


def load(model_dir):
  """(network F with the EMA weights, info dict) of a trained generator in `model_dir`."""
  info = load_info(model_dir)
  version = info.get("format_version")
  if version != FORMAT_VERSION:
    raise DataError(f"{fileio.join(model_dir, CONFIG_FILE)}: generator format {version}, this "
                    f"rgd reads format {FORMAT_VERSION} only (format 1 is an earlier U-Net "
                    "whose weights do not fit SongUNet's layout); retrain it with `python -m "
                    "rgd.train_generator`")
  network = build(info["unet"])
  arrays = fileio.load_npz(fileio.join(model_dir, WEIGHTS_FILE))
  weights = [arrays[f"w{i:04d}"] for i in range(len(arrays))]
  if len(weights) != len(network.weights):
    raise DataError(f"{model_dir}: {len(weights)} saved arrays for a network of "
                    f"{len(network.weights)} weights")
  network.set_weights(weights)
  return network, info
