"""The Inception network of published FIDs, run in TensorFlow from the file a user downloads.

Published FIDs (Heusel et al. 2017's TTUR `fid.py`, pytorch-fid, NVlabs/edm `fid.py`) all use
the Inception-v3 graph released on 2015-12-05 (`inception-2015-12-05.tgz`, file
`classify_image_graph_def.pb`; EDM's `inception-2015-12-05.pkl` and pytorch-fid's
`pt_inception-2015-12-05` weights are conversions of it): features are the 2048-d output of
`pool_3` for float images in [0, 255] fed at `ExpandDims:0` (the graph resizes them to 299x299
with its own ResizeBilinear and maps them to [-1, 1]).

That GraphDef is from 2015: it uses BatchNormWithGlobalNormalization, which TensorFlow 2 no
longer runs, so importing it with tf.import_graph_def fails. rgd reads the GraphDef protobuf
(a data format, not a pickle) and evaluates the part of it between the input and `pool_3` with
its own small interpreter of the graph's few operation types (`OPS`). A graph with any other
operation on that path is refused, naming it: no operation of the file runs that rgd did not
write, so a file cannot read or write files through TensorFlow ops.
"""
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from rgd.errors import DataError
from rgd.runtime import fileio

GRAPH_FILE = "classify_image_graph_def.pb"   # in inception-2015-12-05.tgz
INPUT = "ExpandDims"    # TTUR fid.py feeds 'FID_Inception_Net/ExpandDims:0' (its import scope)
OUTPUT = "pool_3"       # TTUR fid.py / pytorch-fid: the 2048-d pool_3 features
FEATURE_DIM = 2048


def _attr(node, name, default=None):
  if name not in node.attr:
    return default
  value = node.attr[name]
  kind = value.WhichOneof("value")
  if kind == "list":
    return list(value.list.i) or [s.decode() for s in value.list.s]
  if kind == "s":
    return value.s.decode()
  return getattr(value, kind)


def _batch_norm_global(node, t, m, v, beta, gamma):
  """BatchNormWithGlobalNormalization (removed from TF at GraphDef version 9): (t - m) /
  sqrt(v + eps), times gamma when scale_after_normalization, plus beta."""
  x = (t - m) * tf.math.rsqrt(v + _attr(node, "variance_epsilon"))
  return (x * gamma if _attr(node, "scale_after_normalization") else x) + beta


def _pool(op, input_key):
  def run(node, x):
    return op(**{input_key: x}, ksize=_attr(node, "ksize"), strides=_attr(node, "strides"),
              padding=_attr(node, "padding"), data_format=_attr(node, "data_format", "NHWC"))
  return run


# op type -> fn(node, *input tensors). The operations on Inception 2015-12-05's path from
# ExpandDims to pool_3 (and the ones a stand-in may use to write the same computation).
OPS = {
    "Identity": lambda node, x: x,
    "Cast": lambda node, x: tf.cast(x, tf.as_dtype(_attr(node, "DstT"))),
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Add": lambda node, a, b: a + b,
    "AddV2": lambda node, a, b: a + b,
    "Relu": lambda node, x: tf.nn.relu(x),
    "Reshape": lambda node, x, shape: tf.reshape(x, shape),
    "ResizeBilinear": lambda node, x, size: tf.raw_ops.ResizeBilinear(
        images=x, size=size, align_corners=_attr(node, "align_corners", False),
        half_pixel_centers=_attr(node, "half_pixel_centers", False)),
    "Conv2D": lambda node, x, w: tf.raw_ops.Conv2D(
        input=x, filter=w, strides=_attr(node, "strides"), padding=_attr(node, "padding"),
        data_format=_attr(node, "data_format", "NHWC"),
        dilations=_attr(node, "dilations", [1, 1, 1, 1])),
    "BatchNormWithGlobalNormalization": _batch_norm_global,
    "MaxPool": _pool(tf.raw_ops.MaxPool, "input"),
    "AvgPool": _pool(tf.raw_ops.AvgPool, "value"),
    "Concat": lambda node, axis, *xs: tf.concat(xs, axis),       # axis first (old Concat)
    "ConcatV2": lambda node, *xs: tf.concat(xs[:-1], xs[-1]),
}


def read_graph_def(path):
  """The GraphDef in `path` (a binary protobuf), or DataError naming the file."""
  if not fileio.gfile.exists(path):
    raise DataError(f"{path}: Inception graph not found (the standard one is {GRAPH_FILE} of "
                    "inception-2015-12-05.tgz; docs/generative.md)")
  with fileio.gfile.GFile(path, "rb") as f:
    data = f.read()
  graph_def = graph_pb2.GraphDef()
  try:
    graph_def.ParseFromString(data)
  except Exception as e:  # protobuf's DecodeError: not a GraphDef
    raise DataError(f"{path}: not a TensorFlow GraphDef (.pb): {e}") from None
  if not graph_def.node:
    raise DataError(f"{path}: not a TensorFlow GraphDef (.pb): no nodes")
  return graph_def


def _input_name(name):
  """('node', output index) of a NodeDef input; control inputs ('^x') have no data."""
  node, _, index = name.partition(":")
  return node, int(index or 0)


class GraphFeatures:
  """Evaluates `graph_def` from `input_name`:0 to `output_name`:0 with the OPS interpreter."""

  def __init__(self, graph_def, input_name=INPUT, output_name=OUTPUT, source="graph"):
    nodes = {n.name: n for n in graph_def.node}
    for name in (input_name, output_name):
      if name not in nodes:
        raise DataError(f"{source}: no node {name!r}; not the Inception graph of FID")
    self.order, self.consts = [], {}
    seen = set()

    def visit(name):   # depth-first, post-order: a node after its inputs
      stack = [(name, False)]
      while stack:
        cur, done = stack.pop()
        if done:
          self.order.append(nodes[cur])
          continue
        if cur in seen or cur == input_name:
          continue
        seen.add(cur)
        node = nodes[cur]
        if node.op == "Const":
          self.consts[cur] = tf.constant(tf.make_ndarray(node.attr["value"].tensor))
          continue
        if node.op not in OPS:
          raise DataError(f"{source}: node {cur!r} is a {node.op} operation, which rgd's "
                          f"Inception reader does not run (it runs only {sorted(OPS)})")
        stack.append((cur, True))
        for inp in reversed(node.input):
          if not inp.startswith("^"):
            stack.append((_input_name(inp)[0], False))
    visit(output_name)
    self.input_name, self.output_name = input_name, output_name
    self.run = tf.function(self._forward, reduce_retracing=True)

  def _forward(self, x):
    values = {self.input_name: x}
    values.update(self.consts)
    for node in self.order:
      args = []
      for inp in node.input:
        if inp.startswith("^"):
          continue
        name, index = _input_name(inp)
        if index:
          raise DataError(f"node {node.name!r} reads output {index} of {name!r}; rgd's "
                          "Inception reader handles single-output operations only")
        args.append(values[name])
      values[node.name] = OPS[node.op](node, *args)
    return values[self.output_name]

  def __call__(self, x):
    return self.run(tf.convert_to_tensor(x, tf.float32))


def inception_2015_extractor(path):
  """uint8 images [n, H, W, 3] -> float32 pool_3 features [n, 2048] of the graph in `path`,
  as TTUR / pytorch-fid feed it: float pixel values in [0, 255], the graph's own resize."""
  features = GraphFeatures(read_graph_def(path), source=path)

  def extract(images):
    out = features(np.asarray(images, np.float32))
    return tf.reshape(out, [tf.shape(out)[0], -1])
  return extract
