"""DeepMind's PyTorch model zoo <-> rgd's Keras models, on numpy arrays (no torch here).

DeepMind released its robust CIFAR models as PyTorch state dicts of `WideResNet` and
`PreActResNet` (deepmind-research `adversarial_robustness/pytorch/model_zoo.py`); RobustBench
serves the same classes as `DMWideResNet` and `DMPreActResNet`
(robustbench/model_zoo/architectures/dm_wide_resnet.py) for its Gowal2020Uncovering,
Gowal2021Improving, Rebuffi2021Fixing and Wang2023Better entries. Their layers map one to one
onto rgd's `wrn-D-W` and `dm_preact_resnetD`:

  torch                                      keras (rgd)
  init_conv / conv_2d                        stem_conv
  layer.G.block.I.{batchnorm_0,conv_0,       groupG_blockI_{bn1,conv1,bn2,conv2,shortcut}
    batchnorm_1,conv_1,shortcut}
  layer_S.I.{batchnorm_0,conv_2d_1,          stageS_blockI_{bn1,conv1,bn2,conv2,shortcut}
    batchnorm_1,conv_2d_2,shortcut}
  batchnorm, logits                          head_bn, logits

Conv kernels are OIHW in torch and HWIO in Keras; the dense kernel is transposed; BatchNorm's
weight/bias/running_mean/running_var are gamma/beta/moving_mean/moving_variance (both eps 1e-5,
dm_wide_resnet.py's nn.BatchNorm2d default and rgd.models.common.BN_EPSILON). The manual
`F.pad` of DeepMind's strided convs is TF's 'same' padding. The running variance is copied as it
is: at inference it is just the variance used, whatever estimator produced it.

    arch = infer_architecture(state_dict)              # depth, width, classes from the shapes
    model = build_model(arch, activation="swish", normalization="cifar10")
    load_state_dict(model, state_dict)
    state_dict = export_state_dict(model)              # DMWideResNet.load_state_dict(strict=True)
"""
import re

import numpy as np

from rgd import models
from rgd.errors import ConfigError, DataError

ACTIVATIONS = ("swish", "silu", "relu")


def strip_prefixes(state):
  """The tensors of a checkpoint: RobustBench wraps them in {'state_dict': ...} and prefixes
  DataParallel's 'module.'; the non-persistent 'mean'/'std' buffers of older files are dropped
  (normalisation is rebuilt from --normalization)."""
  for key in ("state_dict", "model_state_dict"):
    if isinstance(state.get(key), dict):
      state = state[key]
  out = {}
  for k, v in state.items():
    k = k[len("module."):] if k.startswith("module.") else k
    if k not in ("mean", "std"):
      out[k] = v
  return out


def infer_architecture(state):
  """{'family': 'wrn'|'dm_preact_resnet', 'name': rgd model name, 'num_classes', ...} from the
  names and shapes of a DeepMind state dict; DataError for anything else."""
  if any("/~/" in k or k.startswith("wide_res_net") for k in state):
    raise DataError("a JAX/Haiku parameter tree (names like 'wide_res_net/~/init_conv'): it was "
                    "read safely, but only the PyTorch layout is mapped; convert the .pt file "
                    "DeepMind released for the same model")
  if "logits.weight" not in state:
    raise DataError("not a DeepMind WideResNet/PreActResNet state dict: no 'logits.weight' "
                    f"(keys start {sorted(state)[:5]})")
  num_classes = int(state["logits.weight"].shape[0])
  if "init_conv.weight" in state:
    blocks = {int(m.group(1)) for k in state
              for m in [re.match(r"layer\.0\.block\.(\d+)\.", k)] if m}
    if not blocks:
      raise DataError("WideResNet state dict without 'layer.0.block.*' tensors")
    n = max(blocks) + 1
    width = int(state["layer.0.block.0.conv_0.weight"].shape[0]) // 16
    depth = 6 * n + 4
    return dict(family="wrn", name=f"wrn-{depth}-{width}", depth=depth, width=width,
                num_classes=num_classes)
  if "conv_2d.weight" in state:
    counts = tuple(1 + max(int(m.group(1)) for k in state
                           for m in [re.match(rf"layer_{s}\.(\d+)\.", k)] if m)
                   for s in range(4))
    depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}.get(counts)
    if depth is None:
      raise DataError(f"PreActResNet with blocks per stage {counts}: only 18 (2,2,2,2) and 34 "
                      "(3,4,6,3) exist in DeepMind's model zoo")
    return dict(family="dm_preact_resnet", name=f"dm_preact_resnet{depth}", depth=depth,
                width=0, num_classes=num_classes)
  raise DataError("not a DeepMind WideResNet/PreActResNet state dict: neither 'init_conv.weight' "
                  "nor 'conv_2d.weight'")


def build_model(arch, activation="swish", normalization="cifar10", bn_offset=True,
                fused_bn=True):
  """The rgd model whose layers take the tensors of `arch` (from infer_architecture)."""
  if activation not in ACTIVATIONS:
    raise ConfigError(f"activation={activation!r}: expected one of {ACTIVATIONS}")
  return models.get_model(arch["name"], num_classes=arch["num_classes"],
                          normalization=normalization, bn_offset=bn_offset, fused_bn=fused_bn,
                          activation="swish" if activation == "silu" else activation)


def _torch_names(model):
  """{keras layer name: torch module prefix} for the convs, BNs and head of `model`."""
  out = {}
  for layer in model.layers:
    name = layer.name
    if name == "stem_conv":
      out[name] = "conv_2d" if model.name.startswith("dm_preact") else "init_conv"
    elif name in ("head_bn", "logits"):
      out[name] = "batchnorm" if name == "head_bn" else "logits"
    else:
      m = re.fullmatch(r"(group|stage)(\d+)_block(\d+)_(bn1|bn2|conv1|conv2|shortcut)", name)
      if not m:
        continue
      kind, g, i, part = m.groups()
      if kind == "group":
        part = dict(bn1="batchnorm_0", conv1="conv_0", bn2="batchnorm_1", conv2="conv_1",
                    shortcut="shortcut")[part]
        out[name] = f"layer.{g}.block.{i}.{part}"
      else:
        part = dict(bn1="batchnorm_0", conv1="conv_2d_1", bn2="batchnorm_1", conv2="conv_2d_2",
                    shortcut="shortcut")[part]
        out[name] = f"layer_{g}.{i}.{part}"
  return out


def _check_family(model):
  if not (model.name.startswith("wrn") or model.name.startswith("dm_preact_resnet")):
    raise ConfigError(f"model {model.name!r}: only rgd's wrn-D-W and dm_preact_resnetD have a "
                      "DeepMind PyTorch twin (DMWideResNet, DMPreActResNet)")


def _layer_tensors(layer, prefix):
  """[(torch name, keras variable, to_keras, from_keras)] of one conv, BN or dense layer."""
  ident = (lambda a: a, lambda a: a)
  conv = (lambda a: np.transpose(a, (2, 3, 1, 0)), lambda a: np.transpose(a, (3, 2, 0, 1)))
  dense = (lambda a: a.T, lambda a: a.T)
  if hasattr(layer, "moving_mean"):
    pairs = [("weight", layer.gamma, ident), ("running_mean", layer.moving_mean, ident),
             ("running_var", layer.moving_variance, ident)]
    if layer.center:
      pairs.append(("bias", layer.beta, ident))
  elif layer.name == "logits":
    pairs = [("weight", layer.kernel, dense), ("bias", layer.bias, ident)]
  else:
    pairs = [("weight", layer.kernel, conv)]
  return [(f"{prefix}.{t}", v, f[0], f[1]) for t, v, f in pairs]


def load_state_dict(model, state, source="state dict"):
  """Assigns the numpy tensors of `state` to `model`'s variables, checking that every tensor is
  used and every shape matches (DataError naming `source` otherwise)."""
  _check_family(model)
  state = {k: np.asarray(v) for k, v in state.items()}
  used, names = set(), _torch_names(model)
  for layer in model.layers:
    prefix = names.get(layer.name)
    if prefix is None:
      continue
    for key, var, to_keras, _ in _layer_tensors(layer, prefix):
      if key not in state:
        raise DataError(f"{source}: missing tensor {key!r} for layer {layer.name}")
      value = to_keras(state[key])
      if tuple(value.shape) != tuple(var.shape):
        raise DataError(f"{source}: {key!r} has shape {state[key].shape}, layer {layer.name} "
                        f"needs {tuple(var.shape)} in Keras' layout")
      var.assign(value.astype(np.float32))
      used.add(key)
    bias = f"{prefix}.bias"
    if hasattr(layer, "moving_mean") and not layer.center and bias in state:
      if np.any(state[bias] != 0):  # a model without BN offsets can take only zero offsets
        raise DataError(f"{source}: {bias!r} is not zero but the model has no BN offsets; "
                        "convert with BN offsets")
      used.add(bias)
  unused = sorted(k for k in set(state) - used if not k.endswith("num_batches_tracked"))
  if unused:
    raise DataError(f"{source}: tensors not used by {model.name}: {unused[:8]}")


def export_state_dict(model):
  """{torch name: float32 numpy array} that DMWideResNet / DMPreActResNet of the same depth,
  width and classes load with strict=True (BN without offsets gets zero biases, and each BN its
  `num_batches_tracked` counter, 0: nothing in eval mode reads it)."""
  _check_family(model)
  out = {}
  names = _torch_names(model)
  for layer in model.layers:
    prefix = names.get(layer.name)
    if prefix is None:
      continue
    for key, var, _, from_keras in _layer_tensors(layer, prefix):
      out[key] = np.ascontiguousarray(from_keras(np.asarray(var.numpy(), np.float32)))
    if hasattr(layer, "moving_mean"):
      if not layer.center:
        out[f"{prefix}.bias"] = np.zeros(layer.gamma.shape, np.float32)
      out[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
  return out


def torch_constructor_args(model):
  """The keyword arguments of DMWideResNet / DMPreActResNet for `model` (activation by name)."""
  _check_family(model)
  acts = {l.get_config().get("activation") for l in model.layers
          if l.name.endswith(("_act1", "head_act"))}
  activation = "relu" if not acts or acts == {"relu"} else "swish"
  norm = next((l for l in model.layers if l.name == "normalize"), None)
  mean = std = None
  if norm is not None:
    mean = [round(float(v), 6) for v in np.ravel(norm.mean)]
    std = [round(float(v), 6) for v in np.sqrt(np.ravel(norm.variance))]
  num_classes = int(model.output_shape[-1])
  if model.name.startswith("wrn"):
    depth, width = (int(v) for v in model.name[len("wrn"):].strip("_").split("_"))
    return dict(cls="DMWideResNet", num_classes=num_classes, depth=depth, width=width,
                activation=activation, mean=mean, std=std)
  return dict(cls="DMPreActResNet", num_classes=num_classes, depth=int(model.name[-2:]),
              width=0, activation=activation, mean=mean, std=std)
