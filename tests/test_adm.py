"""rgd.edm.adm / rgd.edm.iddpm are NVlabs/edm's DhariwalUNet and iDDPMPrecond, and
rgd.interop.guided_diffusion reads guided-diffusion's ADM: the PyTorch twins of
tools/adm_torch_twin.py (written from networks.py and guided-diffusion's unet.py) give the same
denoiser output on the same weights, the check fails on seeded mistakes, and the ImageNet-64
network has NVlabs' parameter count."""
import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from rgd.edm import adm, iddpm, sampler, unet
from rgd.errors import ConfigError, DataError
from rgd.interop import guided_diffusion

SIGMAS = [0.01, 0.2, 2.0, 80.0]   # EDM's sampling range clipped to the iDDPM grid
# NVlabs/edm networks.py at train.py --arch=adm's ImageNet-64 config with 1000 classes, counted
# by building NVlabs' own classes in PyTorch: iDDPMPrecond (out 6) and EDMPrecond (out 3);
# guided-diffusion's create_model with the 64x64 flags counts 295,904,454 too.
IMAGENET64_PARAMETERS = {6: 295_904_454, 3: 295_899_267}


def _twin():
  pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
  import adm_torch_twin  # pylint: disable=g-import-not-at-top
  return adm_torch_twin


def test_adm_embedding_hand_computed():
  # dim 4, endpoint=False: freqs (1/10000) ** (i / 2) = [1, 0.01]; [cos, sin] as guided-diffusion.
  got = unet.positional_embedding(tf.constant([2.0]), 4, endpoint=False, sin_first=False)
  np.testing.assert_allclose(got.numpy()[0], [math.cos(2), math.cos(0.02), math.sin(2),
                                              math.sin(0.02)], rtol=1e-6)


def test_multi_head_attention_hand_computed():
  # 2 heads of 1 channel on 2 positions; qkv channel 3 (h c_h + c) + j = component j.
  rng = np.random.default_rng(0)
  qkv = rng.normal(size=(1, 1, 2, 6)).astype(np.float32)
  got = unet.AttentionOp(num_heads=2)(tf.constant(qkv)).numpy()[0, 0]
  for h in range(2):
    q, k, v = (qkv[0, 0, :, 3 * h + j] for j in range(3))
    w = np.exp(np.outer(q, k))   # / sqrt(1)
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(got[:, h], w @ v, rtol=1e-5)


@pytest.fixture(scope="module")
def pair():
  twin = _twin()
  model, net = twin.build_pair()
  yield twin, model, net
  twin.seed_bug(net, None)


@pytest.mark.parametrize("labels", [True, False])
def test_iddpm_denoiser_matches_torch_twin(pair, labels):
  twin, model, net = pair
  twin.seed_bug(net, None)
  # Random weights (no part hides behind a zero init); |D_rgd - D_twin| / max(sigma, 1):
  # measured 3.1e-6 (D = x - sigma F is a difference of terms of size ~sigma).
  assert twin.compare(model, net, SIGMAS, with_labels=labels) < 2e-5


@pytest.mark.parametrize("bug", ["scale_shift", "attn_scale", "skip_scale", "sin_cos", "c_noise"])
def test_twin_check_fails_on_seeded_mistake(pair, bug):
  twin, model, net = pair
  twin.seed_bug(net, bug)
  try:
    assert twin.compare(model, net, SIGMAS) > 1e-2   # measured 0.089 .. 1.05
  finally:
    twin.seed_bug(net, None)


@pytest.mark.parametrize("new_order", [True, False])
def test_importer_matches_guided_diffusion_unet(new_order):
  twin = _twin()
  # guided-diffusion's UNetModel (twin, random weights, its own key names) -> rgd via the
  # importer: the same iDDPM denoiser output (measured 4.2e-6, legacy order 3.9e-6).
  assert twin.compare_import(dict(new_attention_order=new_order)) < 2e-5


def test_qkv_permutation_hand_computed():
  # 2 heads of 2 channels (C = 4). DhariwalUNet row h*6 + 3c + j; guided-diffusion's new order
  # row j*4 + h*2 + c, legacy row h*6 + j*2 + c.
  new = guided_diffusion.qkv_permutation(4, 2, new_order=True)
  assert list(new[:6]) == [0, 4, 8, 1, 5, 9] and list(new[6:]) == [2, 6, 10, 3, 7, 11]
  legacy = guided_diffusion.qkv_permutation(4, 2, new_order=False)
  assert list(legacy[:6]) == [0, 2, 4, 1, 3, 5] and sorted(legacy) == list(range(12))


def _small_state():
  twin = _twin()
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  gd = twin.GuidedDiffusionTwin(**twin.GD_SMALL)
  cfg = twin.GD_SMALL
  config = guided_diffusion.config_with(
      image_size=cfg["image_size"], num_channels=cfg["model_channels"],
      num_res_blocks=cfg["num_res_blocks"], attention_resolutions=cfg["attention_resolutions"],
      channel_mult=cfg["channel_mult"], num_classes=cfg["num_classes"])
  return {k: v.numpy() for k, v in gd.state_dict().items()}, config


def test_importer_refuses_a_wrong_state_dict():
  state, config = _small_state()
  with pytest.raises(DataError, match=r"ckpt.pt: no tensor middle_block\.1\.qkv\.weight"):
    guided_diffusion.to_keras_weights(
        {k: v for k, v in state.items() if not k.startswith("middle_block.1.qkv")}, config,
        "ckpt.pt")
  with pytest.raises(DataError, match="ckpt.pt: 1 tensor.*'extra.weight'"):
    guided_diffusion.to_keras_weights(dict(state, **{"extra.weight": np.zeros(2)}), config,
                                      "ckpt.pt")
  bad = dict(state, **{"out.2.weight": np.zeros((3, 128, 3, 3), np.float32),
                       "out.2.bias": np.zeros(3, np.float32)})   # learn_sigma off: 3, not 6
  with pytest.raises(DataError, match="ckpt.pt: out_conv: shapes"):
    guided_diffusion.build_from_state_dict(bad, config, "ckpt.pt")
  with pytest.raises(ConfigError, match="num_head_channels=-1"):
    guided_diffusion.config_with(num_head_channels=-1)
  with pytest.raises(ConfigError, match="unknown flag"):
    guided_diffusion.config_with(num_channel=3)


def test_importer_reads_a_pt_file_with_weights_only(tmp_path):
  torch = pytest.importorskip("torch")
  state, config = _small_state()
  path = str(tmp_path / "small.pt")
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
  net = guided_diffusion.load(path, config)
  layer = net.get_layer("map_label")   # the label table is the kernel as it is
  np.testing.assert_array_equal(layer.kernel.numpy(), state["label_emb.weight"])
  torch.save({"w": torch.zeros(1), "f": print}, str(tmp_path / "code.pt"))
  with pytest.raises(DataError, match="code.pt: refused"):
    guided_diffusion.load(str(tmp_path / "code.pt"), config)


def test_iddpm_grid_agrees_with_networks_py():
  twin = _twin()
  u_theirs = twin.iddpm_u().numpy()
  u = iddpm.u_table()
  assert u.shape == (1001,) and u[-1] == 0 and np.all(np.diff(u) < 0)
  # float32 recursion there, float64 here: 5e-4 relative at the low end at most.
  np.testing.assert_allclose(u[:-1], u_theirs[:-1], rtol=1e-3)
  sigmas = np.array([0.007, 0.01, 0.2, 1.0, 2.0, 80.0, 150.0], np.float64)
  ours = np.abs(sigmas[:, None] - u[None]).argmin(1)
  theirs = np.abs(sigmas[:, None] - u_theirs[None]).argmin(1)
  np.testing.assert_array_equal(ours, theirs)


def test_iddpm_c_noise_round_sigma_and_range():
  net = adm.adm_unet(image_shape=(8, 8, 3), num_classes=2, out_channels=6, model_channels=8,
                     channel_mult=(1,), num_blocks=1, attn_resolutions=())
  pre = iddpm.IDDPMPrecond(net)
  u = pre.u
  assert pre.sigma_max == float(u[0]) and pre.sigma_min == float(u[999])
  # sigma = u_j -> c_noise = M - 1 - j; midway values go to the nearer one.
  s = tf.constant([u[0], u[999], u[500], 0.9 * u[500] + 0.1 * u[501]], tf.float32)
  np.testing.assert_array_equal(pre.c_noise(s).numpy(), [999, 0, 499, 499])
  np.testing.assert_array_equal(pre.round_sigma([u[10] * 1.0001, 1e9]), [u[10], u[0]])
  # Zero-initialised out_conv: F = 0, so D = x whatever sigma (c_skip = 1).
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(pre(x, 3.0, tf.one_hot([0, 1], 2)).numpy(), x)


def test_heun_rounds_every_noise_level_to_the_grid():
  # edm_sampler: t_steps = round_sigma(t_steps); t_hat = round_sigma(t_cur + gamma t_cur).
  u = iddpm.u_table().astype(np.float64)
  snap = lambda s: u[np.abs(np.asarray(s)[..., None] - u).argmin(-1)]
  seen = []
  def denoise(x, sigma, labels):
    seen.append(float(sigma))
    return tf.zeros_like(x)
  sampler.heun_sample(denoise, tf.constant([[1, 2]], tf.int64), tf.zeros([1, 1]), (2, 2, 1),
                      num_steps=4, sigma_min=0.01, sigma_max=80.0, s_churn=10.0, s_max=50.0,
                      round_sigma=snap)
  t = snap(sampler.time_steps(4, 0.01, 80.0)[:-1])
  gamma = np.where(t <= 50.0, min(10.0 / 4, math.sqrt(2) - 1), 0.0)
  t_hat = snap(t * (1 + gamma))
  want = [t_hat[0], t[1], t_hat[1], t[2], t_hat[2], t[3], t_hat[3]]
  np.testing.assert_allclose(seen, want, rtol=1e-6)
  assert all(np.isclose(u, s, rtol=1e-6).any() for s in seen)


def _count_with_zero_init(monkeypatch, **kwargs):
  # Random initialisation of 296M weights takes ~20 s on a CPU; zeros give the same count.
  monkeypatch.setattr(adm, "_kaiming", lambda fan_in: "zeros")
  return adm.adm_unet(**kwargs).count_params()


@pytest.mark.slow   # builds the 296M-parameter network (~10 s, 1.2 GB) and its twins
def test_imagenet64_parameter_count(monkeypatch):
  assert _count_with_zero_init(monkeypatch, out_channels=6) == IMAGENET64_PARAMETERS[6]
  assert tuple(_twin().imagenet64_parameter_count()) == (IMAGENET64_PARAMETERS[6],) * 2
