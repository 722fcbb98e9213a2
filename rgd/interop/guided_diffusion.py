"""openai/guided-diffusion's released ADM checkpoints (a plain state dict, e.g.
`64x64_diffusion.pt`) into rgd's ADM network (rgd.edm.adm, NVlabs/edm's DhariwalUNet), which
rgd samples with iDDPM preconditioning (rgd.edm.iddpm) and the Heun sampler, as NVlabs/edm runs
its `baseline-imagenet-64x64-cond-adm` model.

The file is read with torch.load(weights_only=True) only (rgd.interop.weight_files.read_torch).
guided-diffusion's `UNetModel` (guided_diffusion/unet.py) and DhariwalUNet are the same network
for the flags below; the key names map as:

  time_embed.0 / .2                -> map_layer0 / map_layer1          (Linear: W^T)
  label_emb (nn.Embedding)         -> map_label (Dense without bias: the table as the kernel)
  input_blocks.0.0                 -> enc_RxR_conv
  input_blocks.k.0 (ResBlock)      -> enc_RxR_block{i} or, for the down ResBlock, enc_RxR_down
  input_blocks.k.1 (AttentionBlock)-> the same block's norm2 / qkv / proj
  middle_block.0, .1, .2           -> dec_RxR_in0 (its attention is .1), dec_RxR_in1
  output_blocks.k.0 [, .1]         -> dec_RxR_block{i} [attention]; the up ResBlock that
                                      ends a level (.1 or .2) -> dec_(2R)x(2R)_up
  out.0 / out.2                    -> out_norm / out_conv
  ResBlock: in_layers.0 -> norm0, in_layers.2 -> conv0, emb_layers.1 -> affine,
            out_layers.0 -> norm1, out_layers.3 -> conv1, skip_connection -> skip
  AttentionBlock: norm -> norm2, qkv (Conv1d) -> qkv, proj_out (Conv1d) -> proj

The qkv rows are permuted: guided-diffusion's QKVAttention (use_new_attention_order) reads q, k,
v as the three thirds of its 3C channels, each split into heads (row j C + h c_h + c); the
legacy QKVAttention reads heads first (row h 3 c_h + j c_h + c); DhariwalUNet reads row
h 3 c_h + 3 c + j (rgd.edm.unet.AttentionOp). guided-diffusion's 1/sqrt(sqrt(c_h)) on q and k
is DhariwalUNet's 1/sqrt(c_h) on k. Its GroupNorm32 has 32 groups, DhariwalUNet min(32, C / 4):
the same for C >= 128 (every layer of the released models).
"""
import numpy as np

from rgd.edm import adm
from rgd.errors import ConfigError, DataError
from rgd.interop import weight_files

# guided-diffusion README, "64x64 model" MODEL_FLAGS (with script_util's channel_mult for 64).
FLAGS_64X64 = dict(image_size=64, num_channels=192, num_res_blocks=3,
                   attention_resolutions=(32, 16, 8), channel_mult=(1, 2, 3, 4),
                   num_classes=1000, learn_sigma=True, num_head_channels=64, dropout=0.1,
                   use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True)


def config_with(**overrides):
  """FLAGS_64X64 with `overrides`; ConfigError for a flag DhariwalUNet cannot express."""
  unknown = sorted(set(overrides) - set(FLAGS_64X64))
  if unknown:
    raise ConfigError(f"guided-diffusion config: unknown flag(s) {unknown}; expected "
                      f"{sorted(FLAGS_64X64)}")
  config = dict(FLAGS_64X64, **overrides)
  for flag, needed in (("num_head_channels", 64), ("use_scale_shift_norm", True),
                       ("resblock_updown", True)):
    if config[flag] != needed:
      raise ConfigError(f"guided-diffusion config: {flag}={config[flag]}; NVlabs' DhariwalUNet "
                        f"(rgd.edm.adm) builds the network of {flag}={needed} only")
  return config


def build_network(config):
  """rgd's ADM for a guided-diffusion config (weights at their initial values)."""
  size = config["image_size"]
  return adm.adm_unet(
      image_shape=(size, size, 3), num_classes=config["num_classes"],
      out_channels=6 if config["learn_sigma"] else 3, model_channels=config["num_channels"],
      channel_mult=tuple(config["channel_mult"]), num_blocks=config["num_res_blocks"],
      attn_resolutions=tuple(config["attention_resolutions"]), dropout=config["dropout"],
      augment_dim=0, name="adm_guided_diffusion")


def module_map(config):
  """[(guided-diffusion module path, rgd layer name or block name, kind)], kind one of linear,
  embedding, conv, norm, resblock, attention, in guided-diffusion's order."""
  size, nb = config["image_size"], config["num_res_blocks"]
  mults, attn = config["channel_mult"], set(config["attention_resolutions"])
  out = [("time_embed.0", "map_layer0", "linear"), ("time_embed.2", "map_layer1", "linear")]
  if config["num_classes"]:
    out.append(("label_emb", "map_label", "embedding"))
  out.append(("input_blocks.0.0", f"enc_{size}x{size}_conv", "conv"))
  k = 1
  for level in range(len(mults)):
    r = size >> level
    for i in range(nb):
      out.append((f"input_blocks.{k}.0", f"enc_{r}x{r}_block{i}", "resblock"))
      if r in attn:
        out.append((f"input_blocks.{k}.1", f"enc_{r}x{r}_block{i}", "attention"))
      k += 1
    if level != len(mults) - 1:
      out.append((f"input_blocks.{k}.0", f"enc_{r // 2}x{r // 2}_down", "resblock"))
      k += 1
  r = size >> (len(mults) - 1)
  out += [("middle_block.0", f"dec_{r}x{r}_in0", "resblock"),
          ("middle_block.1", f"dec_{r}x{r}_in0", "attention"),
          ("middle_block.2", f"dec_{r}x{r}_in1", "resblock")]
  k = 0
  for level in reversed(range(len(mults))):
    r = size >> level
    for i in range(nb + 1):
      out.append((f"output_blocks.{k}.0", f"dec_{r}x{r}_block{i}", "resblock"))
      j = 1
      if r in attn:
        out.append((f"output_blocks.{k}.1", f"dec_{r}x{r}_block{i}", "attention"))
        j = 2
      if level and i == nb:
        out.append((f"output_blocks.{k}.{j}", f"dec_{2 * r}x{2 * r}_up", "resblock"))
      k += 1
  return out + [("out.0", "out_norm", "norm"), ("out.2", "out_conv", "conv")]


_RESBLOCK = (("in_layers.0", "_norm0", "norm"), ("in_layers.2", "_conv0", "conv"),
             ("emb_layers.1", "_affine", "linear"), ("out_layers.0", "_norm1", "norm"),
             ("out_layers.3", "_conv1", "conv"), ("skip_connection", "_skip", "conv"))
_ATTENTION = (("norm", "_norm2", "norm"), ("qkv", "_qkv", "qkv"), ("proj_out", "_proj", "conv"))


def qkv_permutation(channels, heads, new_order=True):
  """perm such that DhariwalUNet's qkv row e is guided-diffusion's row perm[e]."""
  c_h = channels // heads
  h, c, j = np.meshgrid(np.arange(heads), np.arange(c_h), np.arange(3), indexing="ij")
  gd = j * channels + h * c_h + c if new_order else h * 3 * c_h + j * c_h + c
  return gd.reshape(-1)   # (h, c, j) in row-major order = DhariwalUNet's row h 3 c_h + 3 c + j


def _convert(kind, tensors, config):
  """Keras weights ([kernel, bias] / [gamma, beta]) of one guided-diffusion module."""
  w, b = tensors.get("weight"), tensors.get("bias")
  if kind == "embedding":
    return [w]
  if kind == "linear":
    return [w.T, b]
  if kind == "norm":
    return [w, b]
  if w.ndim == 3:   # Conv1d of AttentionBlock: [out, in, 1]
    w = w[..., None]
  if kind == "qkv":
    perm = qkv_permutation(w.shape[1], w.shape[1] // 64, config["use_new_attention_order"])
    w, b = w[perm], b[perm]
  return [w.transpose(2, 3, 1, 0), b]


def to_keras_weights(state, config, source="state dict"):
  """{rgd layer name: [arrays]} from a guided-diffusion state dict; DataError naming `source`
  and the key for a missing, left-over or misshapen tensor."""
  state = {k: np.asarray(v, np.float32) for k, v in state.items()}
  used, out = set(), {}
  for prefix, name, kind in module_map(config):
    subs = {"resblock": _RESBLOCK, "attention": _ATTENTION}.get(kind, (("", "", kind),))
    for sub, suffix, sub_kind in subs:
      path = f"{prefix}.{sub}" if sub else prefix
      tensors = {p: state[f"{path}.{p}"] for p in ("weight", "bias") if f"{path}.{p}" in state}
      if not tensors:
        if sub == "skip_connection":   # an identity skip has no weights
          continue
        raise DataError(f"{source}: no tensor {path}.weight: not a guided-diffusion UNetModel "
                        f"of this config ({_describe(config)})")
      used |= {f"{path}.{p}" for p in tensors}
      out[name + suffix] = _convert(sub_kind, tensors, config)
  left = sorted(set(state) - used)
  if left:
    raise DataError(f"{source}: {len(left)} tensor(s) this config does not use, e.g. {left[0]!r} "
                    f"({_describe(config)})")
  return out


def _describe(config):
  return ", ".join(f"{k}={config[k]}" for k in ("image_size", "num_channels", "num_res_blocks",
                                                "channel_mult", "attention_resolutions"))


def build_from_state_dict(state, config=None, source="state dict"):
  """rgd's ADM holding the state dict's weights (config: FLAGS_64X64 by default)."""
  config = config or config_with()
  weights = to_keras_weights(state, config, source)
  network = build_network(config)
  layers = {l.name: l for l in network.layers if l.weights}
  missing = sorted(set(layers) - set(weights))
  if missing:
    raise DataError(f"{source}: no weights for rgd layer {missing[0]!r}")
  for name, arrays in weights.items():
    layer = layers.get(name)
    shapes = [tuple(w.shape) for w in layer.weights] if layer else None
    if shapes != [a.shape for a in arrays]:
      raise DataError(f"{source}: {name}: shapes {[a.shape for a in arrays]} vs the network's "
                      f"{shapes} ({_describe(config)})")
    layer.set_weights(arrays)
  return network


def load(path, config=None):
  """rgd's ADM with the weights of guided-diffusion's `.pt` at `path` (torch.load with
  weights_only=True; torch needed), config FLAGS_64X64 unless given."""
  return build_from_state_dict(weight_files.read_torch(path), config, source=path)
