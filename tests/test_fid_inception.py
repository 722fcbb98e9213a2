"""The standard FID network (rgd.datagen.inception): a small stand-in written by the test in the
file format of inception-2015-12-05 (a binary GraphDef with ExpandDims -> ResizeBilinear -> ...
-> pool_3, using the 2015 operations TF 2 no longer runs: BatchNormWithGlobalNormalization and
the old Concat) loads, its features have the standard 2048 shape and equal a direct computation,
FID of a set with itself is 0, and files that are not such a graph are refused by name."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from rgd.datagen import complementarity, fid, inception
from rgd.errors import DataError

RNG = np.random.default_rng(0)
W1 = (RNG.normal(size=(3, 3, 3, 8)) * 0.3).astype(np.float32)
BN = [RNG.normal(size=8).astype(np.float32) for _ in range(4)]   # mean, var, beta, gamma
BN[1] = np.abs(BN[1]) + 0.5
W2 = (RNG.normal(size=(1, 1, 8, 4)) * 0.3).astype(np.float32)
W3 = (RNG.normal(size=(1, 1, 12, 2048)) * 0.3).astype(np.float32)


def _hand_node(graph_def, name, op, inputs, **attrs):
  node = graph_def.node.add()
  node.name, node.op = name, op
  node.input.extend(inputs)
  node.attr["T"].type = types_pb2.DT_FLOAT
  for key, value in attrs.items():
    if isinstance(value, bool):
      node.attr[key].b = value
    elif isinstance(value, float):
      node.attr[key].f = value
    else:
      node.attr[key].i = value


def _stand_in_graph_def():
  g = tf.Graph()
  with g.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
    r = tf.raw_ops.ResizeBilinear(images=x, size=tf.constant([16, 16], name="size"),
                                  name="ResizeBilinear")
    m = tf.multiply(tf.subtract(r, 128.0, name="Sub"), 1 / 128.0, name="Mul")
    tf.nn.conv2d(m, tf.constant(W1), 1, "SAME", name="conv/Conv2D")
    for name, value in zip(("bn/mean", "bn/var", "bn/beta", "bn/gamma"), BN):
      tf.constant(value, name=name)
    tf.constant(3, name="mixed/axis")
  gd = g.as_graph_def()
  # The 2015 operations, written as the 2015 graph has them.
  _hand_node(gd, "conv/batchnorm", "BatchNormWithGlobalNormalization",
             ["conv/Conv2D", "bn/mean", "bn/var", "bn/beta", "bn/gamma"],
             variance_epsilon=1e-3, scale_after_normalization=True)
  g2 = tf.Graph()
  with g2.as_default():
    t = tf.compat.v1.placeholder(tf.float32, [None, 16, 16, 8], name="conv/batchnorm")
    relu = tf.nn.relu(t, name="conv")
    pool = tf.nn.max_pool2d(relu, 3, 2, "SAME", name="pool")
    tf.nn.conv2d(pool, tf.constant(W2, name="w2"), 1, "SAME", name="branch/Conv2D")
  for node in g2.as_graph_def().node:
    if node.name != "conv/batchnorm":
      gd.node.add().CopyFrom(node)
  _hand_node(gd, "mixed", "Concat", ["mixed/axis", "pool", "branch/Conv2D"], N=2)
  g3 = tf.Graph()
  with g3.as_default():
    t = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 12], name="mixed")
    c = tf.nn.conv2d(t, tf.constant(W3, name="w3"), 1, "VALID", name="head/Conv2D")
    tf.nn.avg_pool2d(c, 8, 1, "VALID", name="pool_3")
  for node in g3.as_graph_def().node:
    if node.name != "mixed":
      gd.node.add().CopyFrom(node)
  gd.versions.producer = 5   # 2015: before BatchNormWithGlobalNormalization was removed (9)
  return gd


def _direct(images):
  """The same network written directly with TF 2 ops."""
  x = tf.raw_ops.ResizeBilinear(images=tf.cast(images, tf.float32), size=[16, 16])
  x = tf.nn.conv2d((x - 128.0) / 128.0, W1, 1, "SAME")
  x = tf.nn.relu(tf.nn.batch_normalization(x, BN[0], BN[1], BN[2], BN[3], 1e-3))
  pool = tf.nn.max_pool2d(x, 3, 2, "SAME")
  x = tf.concat([pool, tf.nn.conv2d(pool, W2, 1, "SAME")], 3)
  return tf.reduce_mean(tf.nn.conv2d(x, W3, 1, "VALID"), axis=[1, 2]).numpy()


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / inception.GRAPH_FILE
  path.write_bytes(_stand_in_graph_def().SerializeToString())
  return str(path)


def test_stand_in_graph_loads_and_gives_standard_features(graph_file):
  extractor, info = complementarity.choose_extractor("auto", inception_graph=graph_file)
  assert info["extractor"].startswith("inception_2015") and "published" in info["comparable_with"]
  images = RNG.integers(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
  feats = np.asarray(extractor(images))
  assert feats.shape == (5, inception.FEATURE_DIM)
  np.testing.assert_allclose(feats, _direct(images), rtol=1e-4, atol=1e-4)


def test_fid_of_a_set_with_itself_is_zero(graph_file):
  extractor, _ = complementarity.choose_extractor("inception_2015", inception_graph=graph_file)
  a = RNG.integers(0, 256, size=(40, 24, 24, 3)).astype(np.uint8)
  b = np.clip(a.astype(int) + 60, 0, 255).astype(np.uint8)
  same, sizes = fid.fid_of_images(extractor, a, a, batch_size=16)
  assert sizes["feature_dim"] == 2048
  assert abs(same) < 1e-3
  assert fid.fid_of_images(extractor, a, b, batch_size=16)[0] > 1.0


def test_other_files_are_refused_by_name(tmp_path):
  bad = tmp_path / "model.pkl"
  bad.write_bytes(b"\x80\x04\x95 not a graph")
  with pytest.raises(DataError, match="model.pkl: not a TensorFlow GraphDef"):
    inception.inception_2015_extractor(str(bad))
  # A graph whose path to pool_3 runs an operation rgd does not interpret (here a file read).
  g = tf.Graph()
  with g.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
    data = tf.io.read_file(tf.constant("/etc/passwd"), name="ReadFile")
    tf.identity(x + tf.cast(tf.strings.length(data), tf.float32), name="pool_3")
  evil = tmp_path / "evil.pb"
  evil.write_bytes(g.as_graph_def().SerializeToString())
  with pytest.raises(DataError, match="evil.pb: node .* is a .* operation"):
    inception.inception_2015_extractor(str(evil))
  with pytest.raises(ValueError, match="not found"):
    complementarity.choose_extractor("inception_2015", inception_graph=str(tmp_path / "no.pb"))


def test_trace_of_the_product_root_equals_scipy_sqrtm():
  """The symmetric eigendecomposition route gives pytorch-fid's sqrtm trace (and FID)."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  from rgd.datagen import fid  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(200, 24)), rng.normal(size=(200, 24)) @ rng.normal(size=(24, 24))
  (m1, s1), (m2, s2) = fid.gaussian_stats(a), fid.gaussian_stats(b)
  expected = np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2)))
  assert fid.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)
  reference = (m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * expected
  assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)
