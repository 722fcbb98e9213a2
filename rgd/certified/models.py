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
  same with sort neurons (q = 0.85 in the CIFAR-10 8/255 command) after the first layer.
"""
import keras

from rgd.certified import layers as L


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


def linf_dist_net(depth, width, num_classes=10, input_shape=(32, 32, 3), sort_q=None,
                  dropout=False, identity_val=10.0, name=None):
  """identity_val 10 as the CIFAR-10 8/255 command of L_inf-dist-net-v2
  (`command/cifar_0.03137.sh`)."""
  if depth < 2:
    raise ValueError(f"linf_dist_net needs depth >= 2, got {depth}")
  inputs = keras.Input(shape=input_shape, name="image")
  x = keras.layers.Flatten(name="flatten")(inputs)
  x = L.LinfDist(width, mean_shift=True, identity_val=identity_val, name="dist0")(x)
  for i in range(1, depth - 1):
    x = L.LinfDist(width, mean_shift=True, identity_val=identity_val, sort_q=sort_q,
                   dropout=dropout, name=f"dist{i}")(x)
  x = L.LinfDist(num_classes, mean_shift=False, use_bias=True, sort_q=sort_q, dropout=dropout,
                 name=f"dist{depth - 1}")(x)
  logits = L.LogitScale(name="logits")(x)
  kind = "sortnet" if sort_q is not None else "linf_dist_net"
  return keras.Model(inputs, logits, name=name or f"{kind}-{depth}-{width}")


def sortnet(depth, width, num_classes=10, input_shape=(32, 32, 3), q=0.85, dropout=False):
  return linf_dist_net(depth, width, num_classes, input_shape, sort_q=q, dropout=dropout,
                       name=f"sortnet{'_dropout' if dropout else ''}-{depth}-{width}")
