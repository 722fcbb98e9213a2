"""Which model an evaluation reads and against which threat model: the shared start of
rgd.evaluate and rgd.certify. A run's `model.json` (written by rgd.train) supplies the dataset,
norm and eps it was trained for; flags override them."""
import contextlib
import os
import platform

import keras
import numpy as np
import tensorflow as tf

import rgd
from rgd import models
from rgd.errors import ConfigError
from rgd.runtime import fileio
from rgd.training import objectives

NORMS = ("linf", "l2")


def parse_eps(text, flag="--eps"):
  """'8/255', '0.5' or a number -> float in (0, 1] (images are in [0, 1])."""
  try:
    if isinstance(text, str) and "/" in text:
      num, den = text.split("/")
      value = float(num) / float(den)
    else:
      value = float(text)
  except (ValueError, ZeroDivisionError) as e:
    raise ConfigError(f"{flag}={text!r} is not a number or a fraction like 8/255") from e
  if not 0.0 < value <= 1.0:
    raise ConfigError(f"{flag}={text!r} must be in (0, 1]: images are in [0, 1]")
  return value


def load_model(model_dir=None, model_path=None):
  """Returns (model, path, checkpoint step or None). A missing --model_dir, --model or
  DIR/model.keras is a ConfigError naming the flag and the path; a file that cannot be read a
  DataError naming it (rgd.models.load)."""
  if bool(model_dir) == bool(model_path):
    raise ConfigError("pass exactly one of --model_dir and --model")
  if model_dir and not tf.io.gfile.isdir(model_dir):
    raise ConfigError(f"--model_dir={model_dir}: the directory is missing")
  path = model_path or fileio.join(model_dir, "model.keras")
  if not tf.io.gfile.exists(path):
    flag = f"--model={model_path}" if model_path else f"--model_dir={model_dir}"
    raise ConfigError(f"{flag}: model file {path} is missing")
  model = models.load(path)
  step = None
  info_path = os.path.splitext(path)[0] + ".json"
  if tf.io.gfile.exists(info_path):
    step = fileio.read_json(info_path).get("step")
  return model, path, step


@contextlib.contextmanager
def naming(path):
  """A ConfigError raised inside (a model of the wrong kind) names the model file `path`: the
  model's own name may say nothing about where it came from."""
  try:
    yield
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from e


DEFAULT_TARGET = dict(dataset="cifar10", norm="linf", eps=8 / 255)


def run_defaults(model_dir=None, model_path=None):
  """What the run was trained on (dataset, norm, eps, data_dir), from the model's .json written
  by rgd.train; {} when there is none."""
  path = model_path or (fileio.join(model_dir, "model.keras") if model_dir else None)
  if not path:
    return {}
  info_path = os.path.splitext(path)[0] + ".json"
  return fileio.read_json(info_path) if tf.io.gfile.exists(info_path) else {}


def resolve_target(run, dataset=None, norm=None, eps=None):
  """(dataset, norm, eps, data_dir, origin): the flags where given, else the run's own, else
  CIFAR-10 Linf 8/255. A standard (non-robust) run has no threat model of its own."""
  threat = objectives.recorded_threat(run) or {}
  own = dict(dataset=run.get("dataset"), norm=threat.get("norm"), eps=threat.get("eps"))
  given = dict(dataset=dataset, norm=norm, eps=eps)
  chosen, origin = {}, []
  for key in ("dataset", "norm", "eps"):
    for where, values in (("flag", given), ("the run", own), ("default", DEFAULT_TARGET)):
      if values[key] is not None:
        chosen[key] = values[key]
        origin.append(f"{key} from {where}")
        break
  chosen["eps"] = parse_eps(chosen["eps"]) if isinstance(chosen["eps"], str) else float(
      chosen["eps"])
  origin = ", ".join(origin)
  return chosen["dataset"], chosen["norm"], chosen["eps"], run.get("data_dir"), origin


def versions():
  return dict(rgd=rgd.__version__, tensorflow=tf.__version__, keras=keras.__version__,
              numpy=np.__version__, python=platform.python_version())
