"""rgd.edm.unet is DDPM++ as NVlabs/edm builds it (SongUNet, train.py --arch=ddpmpp --cond=1):
the PyTorch twin of tools/edm_torch_twin.py (written from networks.py) gives the same denoiser
output on the same weights, the check fails on seeded mistakes, and the CIFAR-10 network has
EDM's structure, initialisation and parameter count."""
import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from rgd.edm import denoiser, store, unet
from rgd.errors import DataError

SIGMAS = [0.002, 0.2, 2.0, 80.0]   # EDM's sampling range (sigma_min 0.002, sigma_max 80)
CIFAR10_PARAMETERS = 55_735_299    # tools/edm_torch_twin.py --count_cifar10 (cond, augment 9)


def _twin():
  pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
  import edm_torch_twin  # pylint: disable=g-import-not-at-top
  return edm_torch_twin


@pytest.fixture(scope="module")
def cifar10_unet():
  tf.keras.utils.set_random_seed(0)
  return unet.edm_unet(dropout=0.13)


def test_positional_embedding_hand_computed():
  # dim 4: half 2, freqs (1/10000) ** (i / (2 - 1)) = [1, 1e-4] (endpoint=True); SongUNet
  # swaps the halves, so [sin, sin, cos, cos].
  got = unet.positional_embedding(tf.constant([2.0]), 4).numpy()[0]
  np.testing.assert_allclose(got, [math.sin(2), math.sin(2e-4), math.cos(2), math.cos(2e-4)],
                             rtol=1e-6)


@pytest.fixture(scope="module")
def pair():
  twin = _twin()
  model, net = twin.build_pair()
  yield twin, model, net
  twin.seed_bug(net, None)


@pytest.mark.parametrize("labels,augment", [(True, True), (True, False), (False, True),
                                            (False, False)])
def test_denoiser_matches_torch_twin(pair, labels, augment):
  twin, model, net = pair
  twin.seed_bug(net, None)
  # Same weights (random, so no part of the network hides behind a 1e-5 init) -> the same
  # D(x; sigma) to float32 tolerance; measured worst 7.2e-7 on |D| ~ 1.
  diff = twin.compare(model, net, SIGMAS, with_labels=labels, with_augment=augment)
  assert diff < 1e-5


@pytest.mark.parametrize("bug", ["adaptive_scale", "label_scale", "sin_cos", "qkv_blocks"])
def test_twin_check_fails_on_seeded_mistake(pair, bug):
  twin, model, net = pair
  twin.seed_bug(net, bug)
  assert twin.compare(model, net, SIGMAS) > 1e-2   # measured 0.23 .. 0.55


def test_cifar10_parameter_count_matches_twin(cifar10_unet):
  assert cifar10_unet.count_params() == CIFAR10_PARAMETERS
  assert _twin().cifar10_parameter_count() == CIFAR10_PARAMETERS


def test_cifar10_attention_placement(cifar10_unet):
  # Encoder blocks at 16x16; decoder: in0 of the lowest level, the last block at 16x16.
  qkv = sorted(l.name for l in cifar10_unet.layers if l.name.endswith("_qkv"))
  assert qkv == sorted([f"enc_16x16_block{i}_qkv" for i in range(4)] +
                       ["dec_8x8_in0_qkv", "dec_16x16_block4_qkv"])


def test_cifar10_initialisation(cifar10_unet):
  layers = {l.name: l for l in cifar10_unet.layers}
  xavier = lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))
  conv1 = np.abs(layers["enc_32x32_block0_conv1"].kernel.numpy()).max()
  limit = 1e-5 * xavier(9 * 256, 9 * 256)   # init_zero: xavier_uniform * 1e-5
  assert 0.9 * limit < conv1 <= limit
  proj = np.abs(layers["enc_16x16_block0_proj"].kernel.numpy()).max()
  assert 0.9 * 1e-5 * xavier(256, 256) < proj <= 1e-5 * xavier(256, 256)
  qkv = np.abs(layers["enc_16x16_block0_qkv"].kernel.numpy()).max()
  limit = math.sqrt(0.2) * xavier(256, 768)   # init_attn: xavier_uniform * sqrt(0.2)
  assert 0.9 * limit < qkv <= limit
  conv0 = np.abs(layers["enc_32x32_block0_conv0"].kernel.numpy()).max()
  assert 0.9 * xavier(9 * 128, 9 * 256) < conv0 <= xavier(9 * 128, 9 * 256)
  assert layers["map_label"].use_bias and not layers["map_augment"].use_bias
  for name in ("map_label", "enc_32x32_block0_conv1", "enc_32x32_block0_affine"):
    assert not np.any(layers[name].bias.numpy())


def test_no_augment_labels_equal_zeros():
  # Sampling passes no augmentation labels (EDM: augment_labels=None skips map_augment); rgd
  # feeds zeros, which is the same because map_augment has no bias.
  tf.keras.utils.set_random_seed(1)
  net = unet.edm_unet(image_shape=(8, 8, 3), num_classes=3, model_channels=8,
                      channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)
  rng = np.random.default_rng(0)   # weights of order 1, so that the labels' effect is visible
  net.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.3 for w in net.get_weights()])
  denoise = denoiser.make_denoiser(net)
  x = tf.random.normal([2, 8, 8, 3])
  labels = tf.one_hot([0, 2], 3)
  np.testing.assert_array_equal(denoise(x, 1.0, labels).numpy(),
                                denoise(x, 1.0, labels, tf.zeros([2, 9])).numpy())
  assert np.abs(denoise(x, 1.0, labels, tf.ones([2, 9])).numpy() -
                denoise(x, 1.0, labels).numpy()).max() > 0


def test_store_refuses_a_format_1_generator(tmp_path):
  # Format 1 is the U-Net from before DDPM++ matched SongUNet exactly: its weights do not fit
  # this network.
  (tmp_path / store.CONFIG_FILE).write_text(json.dumps(dict(format_version=1, unet={})))
  with pytest.raises(DataError, match="generator format 1.*retrain"):
    store.load(str(tmp_path))
