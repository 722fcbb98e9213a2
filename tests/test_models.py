"""Architectures match RECIPES.md "Model"."""
import keras
import numpy as np
import pytest

from rgd import models


def test_wrn_28_10_size_and_structure():
  m = models.get_model("wrn-28-10")
  # RECIPES.md: about 36M parameters (36.48M in DeepMind's model zoo).
  assert 36.4e6 < m.count_params() < 36.6e6
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
