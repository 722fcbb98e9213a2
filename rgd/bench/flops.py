"""Analytic forward FLOPs of a Keras model, per example, by walking its layers.

    forward_flops(get_model("wrn-28-10"), (32, 32, 3))   # ~1.05e10 (5.25 GMAC, docs/recipes.md)

FLOPs are 2 x multiply-accumulates of the convolutions (Conv1D/2D/3D, depthwise and separable),
dense layers and multi-head self-attention (projections and the two S x S products), the
operations that dominate; biases, normalisation, activations and pooling
are ignored (they are a few percent). Nested models are walked recursively, and a layer called
several times counts once per call. The model must be functional or Sequential (its layers'
shapes come from the graph); when `input_shape` differs from the model's, the model is cloned
on the new input first.
"""
import keras
import numpy as np

from rgd.errors import ConfigError


def _dims(shape):
  return [d for d in shape[1:]]


def _conv_flops(layer, in_shape, out_shape):
  out = _dims(out_shape)
  spatial = int(np.prod(out[:-1]))
  kernel = int(np.prod(layer.kernel_size))
  if isinstance(layer, keras.layers.SeparableConv2D) or isinstance(
      layer, getattr(keras.layers, "SeparableConv1D", ())):
    c_in = _dims(in_shape)[-1]
    depthwise = spatial * kernel * c_in * layer.depth_multiplier
    pointwise = spatial * c_in * layer.depth_multiplier * out[-1]
    return 2 * (depthwise + pointwise)
  if isinstance(layer, (keras.layers.DepthwiseConv2D,
                        getattr(keras.layers, "DepthwiseConv1D", ()))):
    return 2 * spatial * kernel * out[-1]
  c_in = _dims(in_shape)[-1]
  groups = getattr(layer, "groups", 1) or 1
  return 2 * spatial * kernel * (c_in // groups) * out[-1]


def _dense_flops(layer, in_shape, out_shape):
  del layer
  rows = int(np.prod(_dims(in_shape)[:-1]))   # Dense on [B, ..., C] acts on every position
  return 2 * rows * _dims(in_shape)[-1] * _dims(out_shape)[-1]


def _attention_flops(layer, in_shape):
  """Self-attention over S = prod(spatial) positions of C channels: q, k, v and output
  projections (4 x 2 S C h d) plus QK^T and AV (2 x 2 S^2 h d), h heads of key size d."""
  dims = _dims(in_shape)
  seq, channels = int(np.prod(dims[:-1])), dims[-1]
  hd = layer.num_heads * layer.key_dim
  return 4 * 2 * seq * channels * hd + 2 * 2 * seq * seq * hd


def _graph(model):
  """The functional graph of a functional or (built) Sequential model."""
  if isinstance(model, keras.Sequential):
    model = getattr(model, "_functional", None)
  if model is None or not hasattr(model, "_nodes_by_depth"):
    raise ConfigError("forward_flops needs functional or Sequential models built on an Input")
  return [node for nodes in model._nodes_by_depth.values() for node in nodes]  # pylint: disable=protected-access


def _model_flops(model):
  total = 0
  for node in _graph(model):   # one node per call: shared layers count once per call
    layer = node.operation
    if isinstance(layer, keras.Model):
      total += _model_flops(layer)
      continue
    if not node.input_tensors or not node.output_tensors:
      continue
    in_shape, out_shape = node.input_tensors[0].shape, node.output_tensors[0].shape
    if isinstance(layer, keras.layers.Dense):
      total += _dense_flops(layer, in_shape, out_shape)
    elif isinstance(layer, keras.layers.MultiHeadAttention):
      total += _attention_flops(layer, in_shape)
    elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                            keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
      total += _conv_flops(layer, in_shape, out_shape)
  return total


def forward_flops(model, input_shape):
  """Forward FLOPs of one example of shape `input_shape` (without the batch axis)."""
  if not hasattr(model, "inputs") or not model.inputs:
    raise ConfigError(f"forward_flops needs a functional or Sequential model with known inputs; "
                      f"got {type(model).__name__}")
  input_shape = tuple(int(d) for d in input_shape)
  if tuple(model.inputs[0].shape[1:]) != input_shape:
    model = keras.models.clone_model(model, input_tensors=keras.Input(input_shape))
  return int(_model_flops(model))
