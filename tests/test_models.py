"""Architectures match docs/recipes.md "Model" and DeepMind's JAX model zoo."""
import keras
import numpy as np
import pytest

from rgd import models
from rgd.training.trainer import decayed_variables


def _hand_count(depth, width, num_classes=10, bn_offset=True):
  """Trainable parameters of DeepMind's WRN-d-w, counted from the architecture: stem conv,
  per block BN (scale [+ offset]) -> 3x3 conv -> BN -> 3x3 conv [+ 1x1 projection], head BN and
  dense with bias."""
  n, bn = (depth - 4) // 6, 2 if bn_offset else 1
  total, cin = 3 * 3 * 3 * 16, 16
  for c in (16 * width, 32 * width, 64 * width):
    for i in range(n):
      total += bn * cin + 9 * cin * c + bn * c + 9 * c * c + (cin * c if i == 0 else 0)
      cin = c
  return total + bn * cin + cin * num_classes + num_classes


def _trainable(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _std_times_sqrt_fan_in(layer):
  w = layer.kernel.numpy()
  return w.std() * np.sqrt(np.prod(w.shape[:-1])), np.abs(w).max() * np.sqrt(np.prod(
      w.shape[:-1]))


def test_wrn_28_10_size_and_structure():
  m = models.get_model("wrn-28-10")
  # 36,479,194 trainable parameters, as DeepMind's Haiku WRN-28-10 (BN with offset).
  assert _trainable(m) == _hand_count(28, 10) == 36_479_194
  convs = [l for l in m.layers if isinstance(l, keras.layers.Conv2D)]
  assert all(not l.use_bias and l.padding == "same" for l in convs)
  assert convs[0].filters == 16 and convs[0].kernel_size == (3, 3)
  bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert all(l.momentum == 0.99 for l in bns)
  acts = [l for l in m.layers if isinstance(l, keras.layers.Activation)]
  assert acts and all(l.activation.__name__ in ("swish", "silu") for l in acts)
  head = m.get_layer("logits")
  assert not np.any(head.kernel.numpy())  # zero-initialised head


def test_projection_shortcut_takes_activated_input():
  m = models.get_model("wrn-16-4")
  shortcut = m.get_layer("group1_block0_shortcut")
  assert shortcut.kernel_size == (1, 1) and shortcut.strides == (2, 2)
  assert shortcut.input.name == m.get_layer("group1_block0_act1").output.name
  # Identity shortcut inside a group: the add sees the block input unchanged.
  add = m.get_layer("group1_block1_add")
  assert add.input[1].name == m.get_layer("group1_block0_add").output.name


def test_normalisation_inside_model():
  m = models.get_model("tiny_cnn", width=4)
  norm = m.get_layer("normalize")
  x = np.full((1, 32, 32, 3), 0.4914, np.float32)
  out = keras.Model(m.input, norm.output)(x).numpy()
  np.testing.assert_allclose(out[..., 0], 0.0, atol=1e-5)
  np.testing.assert_allclose(out[0, 0, 0, 1], (0.4914 - 0.4822) / 0.2435, rtol=1e-4)


@pytest.mark.parametrize("name,params", [("resnet18", 11.17e6), ("preact_resnet18", 11.17e6),
                                         ("preact_resnet50", 23.5e6)])
def test_resnets(name, params):
  m = models.get_model(name)
  assert abs(m.count_params() - params) / params < 0.02
  assert m.output_shape == (None, 10)


def test_logits_stay_float32_under_bf16():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    m = models.get_model("tiny_cnn", width=4)
    assert m.get_layer("conv0").compute_dtype == "bfloat16"
    out = m(np.random.rand(2, 32, 32, 3).astype(np.float32))
    assert out.dtype == "float32"
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_unknown_model_name():
  with pytest.raises(ValueError, match="Unknown model 'wrn28'"):
    models.get_model("wrn28")
  with pytest.raises(ValueError, match="6n \\+ 4"):
    models.get_model("wrn-27-10")


def test_default_init_is_haikus_truncated_normal():
  """hk.Conv2D's default TruncatedNormal(1/sqrt(fan_in)), cut at 2 std without correction:
  sample std 0.8796/sqrt(fan_in), no weight beyond 2/sqrt(fan_in)."""
  m = models.get_model("wrn-16-4")
  for name in ("stem_conv", "group1_block0_conv1", "group2_block1_conv2"):
    std, largest = _std_times_sqrt_fan_in(m.get_layer(name))
    assert abs(std / 0.8796 - 1) < 0.05, (name, std)
    assert largest <= 2.0 + 1e-6
  assert not np.any(m.get_layer("logits").kernel.numpy())  # hk.Linear(w_init=jnp.zeros)
  bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert all(l.center and l.scale and l.epsilon == 1e-5 for l in bns)


@pytest.mark.parametrize("conv_init,expected", [("pytorch", 1 / np.sqrt(3)),
                                                ("he_normal", np.sqrt(2))])
def test_other_conv_inits(conv_init, expected):
  m = models.get_model("wrn-16-4", conv_init=conv_init)
  std, _ = _std_times_sqrt_fan_in(m.get_layer("group1_block0_conv1"))
  assert abs(std / expected - 1) < 0.05


def test_bn_offset_and_head_options_build_the_documented_variables():
  m = models.get_model("wrn-16-2", bn_offset=False, head_init="haiku")
  bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert bns and all(l.beta is None and l.gamma is not None for l in bns)
  assert not any("beta" in v.path for v in m.trainable_variables)
  assert _trainable(m) == _hand_count(16, 2, bn_offset=False)
  std, largest = _std_times_sqrt_fan_in(m.get_layer("logits"))
  assert abs(std / 0.8796 - 1) < 0.1 and largest <= 2.0 + 1e-6
  with pytest.raises(ValueError, match="conv_init='glorot'"):
    models.get_model("tiny_cnn", conv_init="glorot")


def test_weight_decay_covers_conv_and_dense_weights_not_batchnorm():
  """DeepMind's utils.weight_decay: names `.*w$`, `.*b$`, minus `.*batchnorm.*`."""
  m = models.get_model("tiny_cnn", width=4)
  paths = sorted(v.path for v in decayed_variables(m))
  assert paths == ["conv0/kernel", "conv1/kernel", "conv2/kernel", "logits/bias",
                   "logits/kernel"]


@pytest.mark.parametrize("bn_offset", [True, False])
def test_fused_batchnorm_matches_keras_batchnorm(bn_offset, tmp_path):
  """The fused layer (default) and Keras' layer with the same weights give the same logits in
  both modes, the same input gradients, and the same moving statistics (Keras' biased batch
  variance, momentum 0.99) after a training-mode pass; a saved model loads back."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from rgd.models.fused_bn import FusedBatchNormalization  # pylint: disable=import-outside-toplevel
  fused = models.get_model("wrn-10-1", bn_offset=bn_offset)
  plain = models.get_model("wrn-10-1", bn_offset=bn_offset, fused_bn=False)
  kinds = {type(l) for l in fused.layers} ^ {type(l) for l in plain.layers}
  assert kinds == {FusedBatchNormalization, keras.layers.BatchNormalization}
  rng = np.random.RandomState(0)
  # Non-trivial BN parameters and statistics, so that every term of the formula matters.
  # (The head is zero-initialised: give it weights too.)
  draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.2, n),
          "moving_mean": lambda n: rng.normal(0, 0.2, n),
          "moving_variance": lambda n: rng.uniform(0.5, 1.5, n)}
  weights = []
  for v in fused.weights:
    key = v.path.rsplit("/", 1)[-1]
    w = v.numpy()
    if key in draw:
      w = draw[key](w.shape)
    elif "logits" in v.path:
      w = rng.normal(0, 0.1, w.shape)
    weights.append(w.astype(np.float32))
  fused.set_weights(weights)
  plain.set_weights(weights)
  x = tf.constant(rng.rand(6, 32, 32, 3).astype(np.float32))
  for training in (False, True):
    grads = []
    for m in (fused, plain):
      with tf.GradientTape() as tape:
        tape.watch(x)
        logits = m(x, training=training)
        loss = tf.reduce_sum(logits * tf.range(10, dtype=tf.float32))
      grads.append((logits.numpy(), tape.gradient(loss, x).numpy()))
    # Relative to the largest entry: float32 rounding (BN's backward cancels large terms).
    for a, b in zip(*grads):
      assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), (training, np.abs(a - b).max())
  # Two training passes above (one per model): the moving statistics moved identically.
  for a, b in zip(fused.get_weights(), plain.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  moving = [i for i, v in enumerate(fused.weights) if "moving" in v.path]
  assert not any(np.allclose(fused.get_weights()[i], weights[i]) for i in moving)  # they moved
  path = str(tmp_path / "m.keras")
  fused.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x).numpy(), fused(x).numpy(), rtol=1e-6, atol=1e-6)
