"""Starting a run from published or earlier weights: `train_and_evaluate.init_checkpoint`.

    python -m rgd.convert --input=cifar10_linf_wrn28-10.pt --output=runs/dm28   # seed 000's
    python -m rgd.train --gin_file=gin/... --model_dir=runs/ft \
        --gin_bindings="train_and_evaluate.init_checkpoint='runs/dm28'"

PATH is a run directory (its model.keras: the weight average an rgd run or rgd.convert wrote)
or a `.keras` file. The network and the weight average both start from those weights; the
optimizer, the schedule and the step counter start afresh. A run that already has checkpoints
resumes from them instead (they are restored after this). The architecture built from gin
(`get_model`) must match the file's: every variable by name and shape, the activations and the
input normalisation; a mismatch is a ConfigError that names the first differences.
"""
from absl import logging
import numpy as np
import tensorflow as tf

from rgd import models
from rgd.errors import ConfigError
from rgd.runtime import fileio


def resolve(path):
  """The .keras file that PATH (a run directory or a .keras file) names."""
  if path.endswith(".keras"):
    keras_path = path
  else:
    keras_path = fileio.join(path, "model.keras")
  if not tf.io.gfile.exists(keras_path):
    raise ConfigError(f"train_and_evaluate.init_checkpoint={path!r}: no model at {keras_path} "
                      "(give a run directory or a .keras file; convert .pt files with "
                      "python -m rgd.convert)")
  return keras_path


def _layer_signature(layer):
  """What of a layer changes the function beyond its variables: activation and normalisation
  constants (fused and Keras BatchNorm count as the same layer)."""
  config = layer.get_config()
  sig = {k: config[k] for k in ("activation",) if k in config}
  if layer.__class__.__name__ == "Normalization":
    sig["mean"] = np.round(np.ravel(config.get("mean") or []), 6).tolist()
    sig["variance"] = np.round(np.ravel(config.get("variance") or []), 6).tolist()
  return sig


def differences(source, target):
  """Readable differences between two models' variables (by path and shape) and layers."""
  src = {v.path: tuple(v.shape) for v in source.weights}
  dst = {v.path: tuple(v.shape) for v in target.weights}
  out = [f"{p}: missing in the file" for p in dst if p not in src]
  out += [f"{p}: not in the model" for p in src if p not in dst]
  out += [f"{p}: shape {src[p]} in the file, {dst[p]} in the model" for p in dst
          if p in src and src[p] != dst[p]]
  theirs = {l.name: _layer_signature(l) for l in source.layers}
  out += [f"layer {l.name}: {theirs[l.name]} in the file, {_layer_signature(l)} in the model"
          for l in target.layers if l.name in theirs and theirs[l.name] != _layer_signature(l)]
  return out


def load_into(path, network, avg_network):
  """Assigns the weights of PATH to `network` and `avg_network` (exactly, variable by name)."""
  keras_path = resolve(path)
  source = models.load(keras_path)
  diff = differences(source, network)
  if diff:
    raise ConfigError(f"init_checkpoint {keras_path} does not match the model built from gin "
                      f"({len(diff)} differences): " + "; ".join(diff[:5]))
  values = {v.path: v.numpy() for v in source.weights}
  for model in (network, avg_network):
    for v in model.weights:
      v.assign(values[v.path])
  logging.info("Initialised the network and its weight average from %s.", keras_path)
  return keras_path
