#!/usr/bin/env python
r"""Converts the published PyTorch corruption networks of DeepAugment (hendrycks/imagenet-r
`DeepAugment/`) into rgd's weights (an npz of `rgd.corruptions.networks`, read by
`make_ada.weights_path` and tools/deepaugment.py --weights):

    python tools/convert_corruption_net.py --network=edsr_baseline_x4 \
        --input=EDSR_Weights/edsr_baseline_x4.pt --output=/weights/edsr_baseline_x4.npz
    python tools/convert_corruption_net.py --network=deepaugment_cae \
        --input=CAE_Weights/model_final.state --output=/weights/deepaugment_cae.npz

The file is read with torch.load(weights_only=True): tensors and plain containers only. A file
that pickles any other object is refused (exit 2), never unpickled: a pickle can run code.
Prints the network's kwargs (`make_ada.network_kwargs`) when they are not the defaults.
"""
import io
import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from rgd import errors  # noqa: E402
from rgd.corruptions import networks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("network", "edsr_baseline_x4", ["edsr_baseline_x4", "deepaugment_cae"],
                  "Which published network the file holds.")
flags.DEFINE_string("input", None, "The PyTorch file (.pt / .state), a state dict.")
flags.DEFINE_string("output", None, "The npz to write (local or gs://).")


def read_state_dict(path):
  """{key: float32 numpy} of the state dict in `path`; DataError naming it otherwise."""
  if not tf.io.gfile.exists(path):
    raise errors.DataError(f"{path}: no such file")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  try:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.DataError(f"{path}: not a PyTorch state dict of tensors (torch.load with "
                           f"weights_only=True refused it: {first})") from None
  for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
    raise errors.DataError(f"{path}: expected a state dict (name -> tensor), got "
                           f"{type(state).__name__}")
  return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}


def convert(network, input_path, output_path):
  """Writes the npz; returns the network kwargs."""
  state = read_state_dict(input_path)
  try:
    kwargs, params = networks.from_torch_state(network, state, source=input_path)
  except ValueError as e:
    raise errors.DataError(str(e)) from None
  networks.save_params(output_path, params)
  return kwargs


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise app.UsageError("--input and --output are required")
  try:
    kwargs = convert(FLAGS.network, FLAGS.input, FLAGS.output)
  except errors.DataError as e:
    print(f"convert_corruption_net: {e}", file=sys.stderr)
    sys.exit(2)
  defaults = networks.NETWORKS[FLAGS.network]().init(0)
  built = networks.NETWORKS[FLAGS.network](**kwargs).init(0)
  same = all(defaults[k].shape == built[k].shape for k in defaults) and len(defaults) == len(
      built)
  print(f"{FLAGS.network}: {len(built)} weights -> {FLAGS.output}")
  if not same:
    print(f"not the published size: bind make_ada.network_kwargs = {kwargs}")


if __name__ == "__main__":
  app.run(main)
