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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.corruptions import networks  # noqa: E402
from rgd.interop import weight_files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("network", "edsr_baseline_x4", ["edsr_baseline_x4", "deepaugment_cae"],
                  "Which published network the file holds.")
cli.define_io_flags()  # --input (.pt / .state, a state dict), --output (the .npz, any filesystem)


def read_state_dict(path):
  """{key: float32 numpy} of the state dict in `path` (rgd.interop.weight_files: torch.load with
  weights_only=True, through gfile); DataError naming the file otherwise."""
  return {k: v.astype(np.float32) for k, v in weight_files.read_torch(path).items()}


def convert(network, input_path, output_path):
  """Writes the npz; returns the network kwargs."""
  state = read_state_dict(input_path)
  kwargs, params = networks.from_torch_state(network, state, source=input_path)
  networks.save_params(output_path, params)
  return kwargs


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise app.UsageError("--input and --output are required")
  kwargs = convert(FLAGS.network, FLAGS.input, FLAGS.output)
  defaults = networks.NETWORKS[FLAGS.network]().init(0)
  built = networks.NETWORKS[FLAGS.network](**kwargs).init(0)
  same = all(defaults[k].shape == built[k].shape for k in defaults) and len(defaults) == len(
      built)
  print(f"{FLAGS.network}: {len(built)} weights -> {FLAGS.output}")
  if not same:
    print(f"not the published size: bind make_ada.network_kwargs = {kwargs}")


if __name__ == "__main__":
  cli.run(main, "convert_corruption_net.py")
