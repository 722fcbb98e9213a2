"""The published corruption networks: small PyTorch networks of the reference layouts (EDSR-
PyTorch's EDSR-baseline x4 as DeepAugment builds it; DeepAugment's
`cae_32x32x32_zero_pad_bin.py` CAE), written here from reading those files and saved with
torch.save, convert through tools/convert_corruption_net.py and give the same outputs in TF; a
file that pickles an arbitrary object is refused (exit 2) without being unpickled."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from rgd import cli, errors
from rgd.corruptions import networks

torch = pytest.importorskip("torch")
nn = torch.nn
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert_corruption_net  # noqa: E402  pylint: disable=g-import-not-at-top

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR-PyTorch model/common.py MeanShift


def _conv(cin, cout, k=3):
  return nn.Conv2d(cin, cout, k, padding=k // 2)


class TorchMeanShift(nn.Conv2d):
  def __init__(self, sign):
    super().__init__(3, 3, 1)
    self.weight.data = torch.eye(3).view(3, 3, 1, 1)
    self.bias.data = sign * 255 * torch.tensor(DIV2K_MEAN)


class TorchResBlock(nn.Module):
  def __init__(self, f):
    super().__init__()
    self.body = nn.Sequential(_conv(f, f), nn.ReLU(True), _conv(f, f))

  def forward(self, x):
    return self.body(x) + x


class TorchEDSRx4(nn.Module):
  """EDSR-baseline x4's layout (state dict keys as edsr_baseline_x4.pt), n blocks, f features."""

  def __init__(self, n, f):
    super().__init__()
    self.sub_mean, self.add_mean = TorchMeanShift(-1), TorchMeanShift(1)
    self.head = nn.Sequential(_conv(3, f))
    self.body = nn.Sequential(*[TorchResBlock(f) for _ in range(n)], _conv(f, f))
    up = nn.Sequential(_conv(f, 4 * f), nn.PixelShuffle(2), _conv(f, 4 * f), nn.PixelShuffle(2))
    self.tail = nn.Sequential(up, _conv(f, 3))

  def forward(self, x):  # x in [0, 255] as EDSR_distort_imagenet.py feeds it
    x = self.head(self.sub_mean(x))
    return self.add_mean(self.tail(self.body(x) + x))


def _padded(pad, conv):
  return [nn.ZeroPad2d(pad), conv]


class TorchCAE(nn.Module):
  """cae_32x32x32_zero_pad_bin.py's layout with widths w = (e1, f, code, d1, d2, d2t, d3)."""

  def __init__(self, w):
    super().__init__()
    e1, f, code, d1, d2, d2t, d3 = w
    block = lambda: nn.Sequential(*_padded(1, nn.Conv2d(f, f, 3)), nn.LeakyReLU(),
                                  *_padded(1, nn.Conv2d(f, f, 3)))
    self.e_conv_1 = nn.Sequential(*_padded((1, 2, 1, 2), nn.Conv2d(3, e1, 5, 2)), nn.LeakyReLU())
    self.e_conv_2 = nn.Sequential(*_padded((1, 2, 1, 2), nn.Conv2d(e1, f, 5, 2)), nn.LeakyReLU())
    self.e_block_1, self.e_block_2, self.e_block_3 = block(), block(), block()
    self.e_conv_3 = nn.Sequential(nn.Conv2d(f, code, 5, 1, 2), nn.Tanh())
    self.d_up_conv_1 = nn.Sequential(nn.Conv2d(code, d1, 3), nn.LeakyReLU(),
                                     *_padded(1, nn.ConvTranspose2d(d1, f, 2, 2)))
    self.d_block_1, self.d_block_2, self.d_block_3 = block(), block(), block()
    self.d_up_conv_2 = nn.Sequential(nn.Conv2d(f, d2, 3), nn.LeakyReLU(),
                                     *_padded(1, nn.ConvTranspose2d(d2, d2t, 2, 2)))
    self.d_up_conv_3 = nn.Sequential(nn.Conv2d(d2t, d3, 3), nn.LeakyReLU(),
                                     nn.ReflectionPad2d(2), nn.Conv2d(d3, 3, 3), nn.Tanh())

  def encode(self, x):
    h = self.e_conv_2(self.e_conv_1(x))
    for b in (self.e_block_1, self.e_block_2, self.e_block_3):
      h = b(h) + h
    return self.e_conv_3(h)

  def decode(self, encoded):
    h = self.d_up_conv_1(encoded * 2.0 - 1)
    for b in (self.d_block_1, self.d_block_2, self.d_block_3):
      h = b(h) + h
    return self.d_up_conv_3(self.d_up_conv_2(h))


def _randomise(module, seed, scale=0.3):
  """Non-trivial weights and biases (default init leaves small outputs)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if "mean" not in name:
        p.copy_(torch.randn(p.shape, generator=g) * scale / np.sqrt(p[0].numel()))
  return module


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)


def test_edsr_x4_converts_and_matches_pytorch(tmp_path, images):
  torch_net = _randomise(TorchEDSRx4(n=2, f=8), 0, scale=1.0).eval()
  pt = str(tmp_path / "edsr.pt")
  torch.save(torch_net.state_dict(), pt)
  kwargs = convert_corruption_net.convert("edsr_baseline_x4", pt, str(tmp_path / "edsr.npz"))
  assert kwargs == {"num_blocks": 2, "features": 8}
  with torch.no_grad():
    ref = _nhwc(torch_net(255 * _nchw(images)).clamp(0, 255) / 255)  # DeepAugment line 313
  assert ref.shape == (2, 48, 48, 3) and 0.05 < ref.std()  # a non-trivial x4 image
  full = networks.EDSRBaselineX4(downsample=False, **kwargs)
  params = networks.load_params(str(tmp_path / "edsr.npz"), full)
  np.testing.assert_allclose(full.apply(params, images).numpy(), ref, atol=2e-5)
  # rgd's default brings the x4 output back to the input size by 4x4 area averaging.
  small = networks.EDSRBaselineX4(**kwargs).apply(params, images).numpy()
  np.testing.assert_allclose(small, ref.reshape(2, 12, 4, 12, 4, 3).mean((2, 4)), atol=2e-5)


def test_edsr_x4_per_group_weights_equal_separate_networks(images):
  net = networks.EDSRBaselineX4(num_blocks=1, features=4)
  p0, p1 = net.init(0), net.init(1)
  grouped = {k: np.stack([p0[k], p1[k]]) for k in p0}
  out = net.apply(grouped, images).numpy()
  np.testing.assert_allclose(out[:1], net.apply(p0, images[:1]).numpy(), atol=1e-5)
  np.testing.assert_allclose(out[1:], net.apply(p1, images[1:]).numpy(), atol=1e-5)


def test_deepaugment_cae_converts_and_matches_pytorch(tmp_path, images):
  widths = (6, 8, 4, 6, 5, 10, 4)
  torch_net = _randomise(TorchCAE(widths), 1, scale=1.0).eval()
  pt = str(tmp_path / "cae.state")
  torch.save(torch_net.state_dict(), pt)
  kwargs = convert_corruption_net.convert("deepaugment_cae", pt, str(tmp_path / "cae.npz"))
  assert kwargs == {"widths": widths}
  net = networks.DeepAugmentCAE(**kwargs)
  params = networks.load_params(str(tmp_path / "cae.npz"), net)
  x = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    code = torch_net.encode(_nchw(x))
    bits = (torch.rand(code.shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    decoded = torch_net.decode(bits)
  assert code.shape == (2, 4, 4, 4) and decoded.shape == (2, 3, 16, 16)
  np.testing.assert_allclose(net.encode(params, x).numpy(), _nhwc(code), atol=2e-5)
  ours = net.decode(params, tf.constant(_nhwc(bits))).numpy()
  np.testing.assert_allclose(ours, _nhwc(decoded), atol=2e-5)
  # The whole network, binarised by the code's sign (no seed), on the reference's clamp(0, 1).
  with torch.no_grad():
    ref = torch_net.decode((code >= 0).float()).clamp(0, 1)
  np.testing.assert_allclose(net.apply(params, x).numpy(), _nhwc(ref), atol=2e-5)


def test_stochastic_binarisation_follows_the_code():
  net = networks.DeepAugmentCAE()
  code = tf.constant(np.linspace(-0.9, 0.9, 7, dtype=np.float32)[None, None, :, None]
                     * np.ones((2000, 1, 1, 1), np.float32))
  bits = net.binarize(code, tf.constant([3, 4])).numpy()
  # code + (bit - code) rounds like the reference's ec3 + eps: bits to float32 rounding.
  np.testing.assert_allclose(bits, np.round(bits), atol=1e-6)
  assert set(np.unique(np.round(bits))) == {0.0, 1.0}
  # P(bit = 1) = (1 + code) / 2 (the reference's `prob`), within 4 standard errors.
  p = (1 + np.linspace(-0.9, 0.9, 7)) / 2
  np.testing.assert_allclose(bits.mean(axis=(0, 1, 3)), p, atol=4 * np.sqrt(0.25 / 2000))
  with tf.GradientTape() as tape:  # the gradient of the identity, as under no_grad eps
    tape.watch(code)
    y = tf.reduce_sum(net.binarize(code, tf.constant([3, 4])) * 3.0)
  np.testing.assert_allclose(tape.gradient(y, code).numpy(), 1.5)


def test_wrong_state_dict_names_the_file(tmp_path):
  pt = str(tmp_path / "other.pt")
  torch.save({"fc.weight": torch.zeros(2, 2)}, pt)
  with pytest.raises(errors.DataError, match="other.pt.*body.0|other.pt.*head.0"):
    convert_corruption_net.convert("edsr_baseline_x4", pt, str(tmp_path / "x.npz"))


class _WritesAFile:
  """Unpickling this object would create `path` (open(path, 'w'))."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_a_pickled_object_is_refused_without_being_unpickled(tmp_path, capsys):
  marker = tmp_path / "written_by_unpickling"
  evil = str(tmp_path / "evil.pt")
  torch.save({"head.0.weight": torch.zeros(1), "payload": _WritesAFile(str(marker))}, evil)
  assert not marker.exists()
  flags = convert_corruption_net.FLAGS
  try:
    with pytest.raises(SystemExit) as exit_info:  # the tool's main, as `python tools/...` runs it
      cli.run(convert_corruption_net.main, "convert_corruption_net.py", argv=[
          "convert_corruption_net.py", f"--input={evil}", f"--output={tmp_path / 'out.npz'}"])
  finally:
    flags.unparse_flags()
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("convert_corruption_net.py: ") and "evil.pt" in err, err
  assert "weights_only" in err, err
  assert not marker.exists() and not (tmp_path / "out.npz").exists()


def test_published_sizes_have_the_reference_parameter_counts():
  count = lambda net: sum(v.size for v in net.init(0).values())
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  # EDSR-baseline x4 (EDSR-PyTorch edsr.py, r16f64x4; ~1.5M in Lim et al. 2017 Table 1): head,
  # 16 x 2 block convs and body conv, two upsampler convs 64 -> 256, tail; MeanShift is fixed.
  assert count(networks.EDSRBaselineX4()) == (conv(3, 3, 64) + 33 * conv(3, 64, 64)
                                              + 2 * conv(3, 64, 256) + conv(3, 64, 3)) == 1517571
  # cae_32x32x32_zero_pad_bin.py: 5x5 convs 3->64->128, 3 residual blocks of two 3x3 128->128
  # convs on each side, 5x5 128->32, 3x3 32->64, ConvT 2x2 64->128, 3x3 128->32, ConvT 2x2
  # 32->256, 3x3 256->16, 3x3 16->3.
  assert count(networks.DeepAugmentCAE()) == (
      conv(5, 3, 64) + conv(5, 64, 128) + 12 * conv(3, 128, 128) + conv(5, 128, 32)
      + conv(3, 32, 64) + conv(2, 64, 128) + conv(3, 128, 32) + conv(2, 32, 256)
      + conv(3, 256, 16) + conv(3, 16, 3))
