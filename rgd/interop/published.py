"""Published checkpoints in and out: DeepMind's and RobustBench's PyTorch models <-> rgd runs.

    import_checkpoint("Rebuffi2021Fixing_70_16_cutmix_extra.pt", "runs/rebuffi",
                      activation="swish", dataset="cifar10", norm="linf", eps=8/255)
    # runs/rebuffi/model.keras + model.json: rgd.evaluate --model_dir, rgd.certify,
    # train_and_evaluate.init_checkpoint take it as a trained run

    export_checkpoint(rgd.models.load("runs/x/model.keras"), "runs/x/model.safetensors")
    # + runs/x/model.torch.json: DMWideResNet's constructor arguments (docs/published_models.md)

The tensors are mapped by rgd.models.torch_format; files are read and written safely by
rgd.interop.weight_files (no arbitrary unpickling).
"""
import hashlib
import posixpath

from rgd.errors import DataError
from rgd.models import torch_format
from rgd.interop import weight_files
from rgd.runtime import checkpointing, fileio


def import_checkpoint(path, output_dir, activation="swish", normalization=None, bn_offset=True,
                      dataset=None, norm=None, eps=None):
  """Converts the DMWideResNet / DMPreActResNet checkpoint at `path` into OUTPUT_DIR/model.keras
  and model.json; returns (model, info). `normalization` defaults to the dataset's statistics
  by the number of classes (CIFAR-100 for 100, else CIFAR-10), as RobustBench builds them."""
  state = torch_format.strip_prefixes(weight_files.read_state_dict(path))
  sha256 = hashlib.sha256(fileio.read_bytes(path)).hexdigest()  # which file, for the record
  try:
    arch = torch_format.infer_architecture(state)
  except DataError as e:
    raise DataError(f"{path}: {e}") from e
  if normalization is None:
    normalization = "cifar100" if arch["num_classes"] == 100 else "cifar10"
  model = torch_format.build_model(arch, activation, normalization, bn_offset)
  torch_format.load_state_dict(model, state, source=path)
  info = dict(architecture=arch["name"], activation=activation, normalization=normalization,
              bn_offset=bool(bn_offset), num_classes=arch["num_classes"], source=path,
              sha256=sha256, weights=f"converted from {path}",
              step=None, dataset=dataset or ("cifar100" if arch["num_classes"] == 100
                                             else "cifar10"))
  if norm is not None:
    info["norm"] = norm
  if eps is not None:
    info["eps"] = float(eps)
  fileio.makedirs(output_dir)
  checkpointing.export_keras(model, posixpath.join(output_dir, "model.keras"))
  fileio.atomic_write_json(posixpath.join(output_dir, "model.json"), info)
  return model, info


def export_checkpoint(model, path):
  """Writes `model`'s weights as a DMWideResNet / DMPreActResNet state dict (`.pt`, `.pth` or
  `.safetensors`) and its constructor arguments beside it (`<stem>.torch.json`); returns them."""
  args = torch_format.torch_constructor_args(model)
  weight_files.write_state_dict(path, torch_format.export_state_dict(model))
  fileio.atomic_write_json(posixpath.splitext(path)[0] + ".torch.json", args)
  return args
