"""Certifiable architectures (registered by name in rgd/models/__init__.py).

* `liresnet(depth, width)`: LiResNet of Hu et al. 2023 as klasleino/gloro
  `tools/training/architectures.py`, `_liresnet_CxCC2F`: stem conv 5x5 stride 2 -> MinMax;
  `depth` x (LiResNetBlock 3x3, residual scale depth^-1/2 -> MinMax); neck conv 4x4 stride 4
  with 2 * width channels -> MinMax -> flatten -> dense 512 -> MinMax; head. Seed 004 Table 5:
  XS L6W128, S L12W128, M L18W128, L L18W256.
* `linf_dist_net(depth, width)`: zbh2047/L_inf-dist-net-v2 `ell_inf_models.py`, `MLPModel`:
  `depth` LinfDist layers (mean shift on all but the last, bias on the last), logits
  -scalar * y. Table 5: depth 6, width 5120.
* `sortnet(depth, width, dropout)`: zbh2047/SortNet `ell_inf_models.py`, `SortMLPModel`: the
  same with sort neurons (q = 0.85 in the CIFAR-10 8/255 command) after the first layer,
  trained by dropout; without dropout the reference's `dropout=1.0` (see `sortnet`).
* `lipconvnet(depth, ...)`: LipConvnet-depth with LOT convolutions (AI-secure/Layerwise-
  Orthogonal-Training `lip_convnets.py`, rgd/certified/lot.py). Table 5: LOT S/M/L =
  LipConvnet-10/20/40.
"""
import keras

from rgd.certified import layers as L
from rgd.certified import lot
from rgd.errors import ConfigError


def liresnet(depth, width, num_classes=10, input_shape=(32, 32, 3), neck_units=512, lln=True,
             name=None):
  inputs = keras.Input(shape=input_shape, name="image")
  x = L.Center(name="center")(inputs)
  x = L.LipConv2D(width, 5, strides=2, name="stem")(x)
  x = L.MinMax(name="stem_act")(x)
  for i in range(depth):
    x = L.LiResNetBlock(3, residual_scale=depth ** -0.5, name=f"block{i}")(x)
    x = L.MinMax(name=f"block{i}_act")(x)
  x = L.LipConv2D(2 * width, 4, strides=4, padding="valid", name="neck")(x)
  x = L.MinMax(name="neck_act")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = L.LipDense(neck_units, name="dense")(x)
  x = L.MinMax(name="dense_act")(x)
  logits = L.GloroHead(num_classes, lln=lln, name="logits")(x)
  return keras.Model(inputs, logits, name=name or f"liresnet-L{depth}W{width}")


# Both l_inf references normalise by the dataset mean and one scalar std (`dataset.py`) and
# divide eps by that std (`main.py`: `args.eps_train /= std`): InputNormalize does both for rgd
# (attacks and certificates stay in [0, 1] pixels; rgd.certified.linf_dist.input_std scales the
# training eps). Their table (zbh2047/SortNet and L_inf-dist-net-v2 `dataset.py`, `mean` and
# `std`; the scalar std is the mean of the per-channel ones they leave in comments), by the key
# of rgd.models.NORMALIZATION:
REFERENCE_STATISTICS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), 0.2009),
    "cifar100": ((0.5071, 0.4867, 0.4408), 0.2667),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), 0.2276),
}
CIFAR10_MEAN, CIFAR10_STD = REFERENCE_STATISTICS["cifar10"]


def scalar_statistics(normalization, mean, std):
  """(mean, scalar std) for the l_inf models of a data set whose rgd statistics are
  `normalization` (a key of rgd.models.NORMALIZATION) with per-channel `mean` and `std`: the
  references' own numbers where they have the data set, else rgd's mean and the mean of its
  per-channel stds (how the references' scalar relates to their per-channel values: CIFAR-10
  mean(0.2023, 0.1994, 0.2010) = 0.2009); no statistics ('none') is mean 0, std 1."""
  if normalization in REFERENCE_STATISTICS:
    return REFERENCE_STATISTICS[normalization]
  if mean is None or std is None:
    return (0.0, 0.0, 0.0), 1.0
  return tuple(mean), sum(std) / len(std)


def linf_dist_net(depth, width, num_classes=10, input_shape=(32, 32, 3), sort_q=None,
                  dropout=False, identity_val=10.0, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                  scalar_lr_ratio=0.2, name=None):
  """identity_val 10 and the scalar's learning rate 0.006 / 0.03 = 0.2 of the others as the
  CIFAR-10 8/255 command of L_inf-dist-net-v2 (`command/cifar_0.03137.sh`). With `dropout`
  (SortNet `SortMLPModel(dropout=q)`): every layer after the first has sort neurons with q,
  trained on random input subsets, and the first layer's mean shift follows the second's
  subsets."""
  if depth < 2:
    raise ConfigError(f"linf_dist_net needs depth >= 2, got {depth}")
  inputs = keras.Input(shape=input_shape, name="image")
  channels = input_shape[-1]
  x = L.InputNormalize(tuple(mean)[:channels] if len(mean) >= channels else mean, std,
                       name="normalize")(inputs)
  x = keras.layers.Flatten(name="flatten")(x)
  out_q = sort_q if dropout else None
  x = L.LinfDist(width, mean_shift=True, identity_val=identity_val, out_dropout=out_q, index=0,
                 name="dist0")(x)
  for i in range(1, depth - 1):
    x = L.LinfDist(width, mean_shift=True, identity_val=identity_val, sort_q=sort_q,
                   dropout=dropout, out_dropout=out_q, index=i, name=f"dist{i}")(x)
  x = L.LinfDist(num_classes, mean_shift=False, use_bias=True, sort_q=sort_q, dropout=dropout,
                 index=depth - 1, name=f"dist{depth - 1}")(x)
  logits = L.LogitScale(lr_ratio=scalar_lr_ratio, name="logits")(x)
  kind = "sortnet" if sort_q is not None else "linf_dist_net"
  return keras.Model(inputs, logits, name=name or f"{kind}-{depth}-{width}")


def sortnet(depth, width, num_classes=10, input_shape=(32, 32, 3), q=0.85, dropout=False,
            mean=CIFAR10_MEAN, std=CIFAR10_STD):
  """zbh2047/SortNet `commands/cifar8_255.sh`: `SortMLPModel(depth=6, width=5120, scalar=True,
  dropout=0.85)`: no identity_val (the model's default None), one learning rate for all.
  Without dropout it is the reference's `dropout=1.0` (its README: "setting the dropout rate to
  1.0" trains the l_inf-dist Net; q = 1 makes the sort neuron the l_inf distance): there is no
  other way to train SortNet without dropout in the reference code."""
  sort_q = q if dropout else None
  return linf_dist_net(depth, width, num_classes, input_shape, sort_q=sort_q, dropout=dropout,
                       identity_val=None, mean=mean, std=std, scalar_lr_ratio=1.0,
                       name=f"sortnet{'_dropout' if dropout else ''}-{depth}-{width}")


# AI-secure/Layerwise-Orthogonal-Training `utils.py` :9-10: CIFAR-10's mean and one std 0.2507
# for every channel, used for CIFAR-100 as well (`train_robust.py` :127, `std = cifar10_std`).
LOT_STD = 0.2507
LOT_SIZES = {"S": 10, "M": 20, "L": 40}   # seed 004 Table 5: LipConvnet-10 / 20 / 40


def lipconvnet(depth, num_classes=10, input_shape=(32, 32, 3), init_channels=32, residual=True,
               lln=False, iterations=lot.NEWTON_ITERATIONS, name=None):
  """LipConvnet-`depth` with LOT convolutions (rgd/certified/lot.py; reference
  `lip_convnets.py`, `LipConvNet` / `LipResNet` with `block_size` = depth / 5): five stages,
  stage s of depth / 5 blocks with `init_channels * 2^s` channels, the last block of each
  stage stride 2 (kernel 1 in stage 5), each block LOT conv -> MaxMin; `residual` mixes the
  blocks between a stage's first and last as 0.5 x + 0.5 block(x) (`ResLayer`; the README's
  command has --residual). Head: LOT 1x1 (orthogonal rows) or with `lln` unit-norm rows."""
  if depth % 5 or depth < 5:
    raise ConfigError(f"lipconvnet: depth must be a positive multiple of 5, got {depth}")
  if tuple(input_shape[:2]) != (32, 32):
    # lip_convnets.py: five stride-2 stages to 1 x 1; the 1x1 head needs exactly that.
    raise ConfigError(f"lipconvnet: 32 x 32 inputs only, got {input_shape}")
  blocks = depth // 5
  inputs = keras.Input(shape=input_shape, name="image")
  channels = input_shape[-1]
  x = L.InputNormalize(CIFAR10_MEAN[:channels], LOT_STD, name="normalize")(inputs)
  planes = init_channels
  for stage in range(5):
    for b in range(blocks):
      last = b == blocks - 1
      hidden = 0 < b < blocks - 1
      kernel = 1 if (last and stage == 4) else 3
      filters = planes * 2 if last else planes
      block = f"stage{stage + 1}_block{b}"
      x = lot.LOTConv2D(filters, kernel, strides=2 if last else 1, iterations=iterations,
                        residual=residual and hidden, name=block)(x)
      if not (residual and hidden):   # the residual block has its MaxMin inside
        x = L.MinMax(name=f"{block}_act")(x)
    planes *= 2
  x = keras.layers.Flatten(name="flatten")(x)
  logits = lot.LOTHead(num_classes, lln=lln, iterations=iterations, name="logits")(x)
  kind = "lot" if residual else "lot_plain"
  return keras.Model(inputs, logits, name=name or f"{kind}-{depth}-{init_channels}"
                     + ("-lln" if lln else ""))
