"""DeepAugment's distortions against the reference's operations (hendrycks/imagenet-r
`DeepAugment/EDSR_distort_imagenet.py`, `CAE_distort_imagenet.py`, `cae_32x32x32_zero_pad_bin.py`):
hand-checked small tensors, and each weight option against its reference line run in PyTorch
on the same kernels (OIHW), with rgd's random draws recorded and replayed in the reference's
order."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.corruptions import deepaugment as da
from rgd.corruptions import networks


class Recorder:
  """A numpy Generator that records what it returns, to replay it in the reference's code."""

  def __init__(self, seed):
    self.rng, self.values = np.random.default_rng(seed), []

  def __getattr__(self, name):
    def call(*args, **kwargs):
      value = getattr(self.rng, name)(*args, **kwargs)
      self.values.append(value)
      return value
    return call

  def replay(self):
    return iter(self.values)


def test_channel_swap_copies_c2_into_c1_as_pytorch_aliasing_does():
  # Hand-checked: (0, 1) makes channel 0 a copy of 1; then (1, 0) copies that copy back:
  # channel 0's content is gone (a true swap would restore the input).
  np.testing.assert_array_equal(da.channel_copy_index(4, [(0, 1), (1, 0)]), [1, 1, 2, 3])
  np.testing.assert_array_equal(da.channel_copy_index(4, [(2, 3), (3, 1), (1, 2)]),
                                [0, 3, 3, 1])
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  pairs = [tuple(rng.integers(8, size=2)) for _ in range(5)]
  x = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3, 1)  # NCHW
  for c1, c2 in pairs:  # EDSR_distort_imagenet.py line 117, verbatim semantics
    x[:, c1], x[:, c2] = x[:, c2], x[:, c1]
  ours = tf.gather(tf.constant(np.arange(48, dtype=np.float32).reshape(2, 8, 3, 1)
                               .transpose(0, 2, 3, 1)), da.channel_copy_index(8, pairs), axis=-1)
  np.testing.assert_array_equal(ours.numpy(), x.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("to_skip", [{4}, {2}, {2, 4}, {3, 4}, {2, 3}])
def test_skip_keeps_only_the_last_kept_body_module(to_skip):
  net = networks.EDSRCifar(num_blocks=4, features=3)
  params = {k: v + 0.05 for k, v in net.init(0).items()}
  head = tf.constant(np.random.default_rng(1).standard_normal((1, 5, 5, 3)), tf.float32)
  c = lambda n, h: networks.conv2d(h, params[n + "/kernel"], params[n + "/bias"])
  body = [lambda h, i=i: h + c(f"block{i}/conv2", tf.nn.relu(c(f"block{i}/conv1", h)))
          for i in range(4)] + [lambda h: c("body_out", h)]
  for i in range(len(body)):  # the reference's loop (lines 152-155), run on rgd's modules
    if i not in to_skip:
      res = body[i](head)
  ours = networks.edsr_body(params, head, 4, 1.0, skip=tuple(sorted(to_skip)))
  np.testing.assert_allclose(ours.numpy(), (res + head).numpy(), atol=1e-6)
  if 4 not in to_skip:  # no residual block at all: body_out(head) + head
    np.testing.assert_allclose(ours.numpy(), (c("body_out", head) + head).numpy(), atol=1e-6)


def test_conv_kernels_hand_checked():
  # One 3x3 kernel 0..8 filtered by a one-hot z at (0, 0): cross-correlation with padding 1
  # moves every entry one step down and right.
  w = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1)
  z = np.zeros((3, 3, 1, 1), np.float32)
  z[0, 0] = 1
  np.testing.assert_array_equal(da.conv_kernels(w, z)[..., 0, 0],
                                [[0, 0, 0], [0, 0, 1], [0, 3, 4]])
  z[0, 0], z[1, 1] = 0, -2  # the centre tap scales
  np.testing.assert_array_equal(da.conv_kernels(w, z)[..., 0, 0], -2 * w[..., 0, 0])


def test_keep_max_hand_checked():
  w = np.array([[3, -1, 0], [5, 2, 5], [-7, 1, 4]], np.float32).reshape(3, 3, 1, 1)
  out = da.keep_max(w)[..., 0, 0]
  np.testing.assert_array_equal(out, [[0, 0, 0], [5, 0, 0], [0, 0, 0]])  # first of the ties


def _reference_edsr_option(torch, option, w1, b1, w2, b2, draws):
  """The reference's get_weights line for `option` on one block (OIHW tensors), with its
  random numbers taken from `draws` in the order rgd drew them."""
  F = torch.nn.functional
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))
  oihw = lambda a: t(np.transpose(a, (3, 2, 0, 1)))
  next(draws)  # the block index (a single block here)
  if option == 0:
    return torch.flip(w1, (0,)), torch.flip(b1, (0,)), torch.flip(w2, (0,)), torch.flip(b2, (0,))
  if option == 1:
    return -w1, -b1, w2, b2
  if option == 2:
    return 0 * w1, 0 * b1, w2, b2
  if option == 3:
    return -F.gelu(w1), b1, -F.gelu(w2), b2
  if option in (4, 5):
    mask = [[0, 1, 0], [1, -4., 1], [0, 1, 0]] if option == 4 else [[-1, -1, -1], [-1, 8., -1],
                                                                     [-1, -1, -1]]
    return w1 * torch.Tensor(mask).view(1, 1, 3, 3), b1, w2, b2
  if option == 6:
    u, r = next(draws), next(draws)
    return w1, b1, w2 * (1 + 2 * np.float32(u) * (2 * oihw(r))), b2
  if option == 7:
    return torch.flip(w1, (-1,)), b1, -1 * w2, b2
  if option == 8:
    z = torch.zeros_like(w1)
    for j in range(z.size(0)):
      shift_x, shift_y = next(draws)
      z[:, j, shift_x, shift_y] = float(next(draws))
    return F.conv2d(w1, z, padding=1), b1, w2, b2
  if option == 9:
    u, r = next(draws), next(draws)
    z = (2 * oihw(r) * np.float32(u) - 1) / 6.
    return F.conv2d(w1, z, padding=1), b1, w2, b2
  if option == 10:
    z = t(next(draws)).view(w2.shape[0], w2.shape[0], 3, 3)
    return w1, b1, F.conv2d(w2, z, padding=1), b2
  if option == 11:
    return w1, b1, w2 + (oihw(next(draws)) - 0.5) * 1.0, b2
  ws = [w1, w2]
  for _ in range(5):
    if option in (12, 16):
      next(draws)  # block
      j = int(next(draws))
      if option == 16:
        w = torch.reshape(ws[j], (ws[j].shape[0], ws[j].shape[1], 9))
        res = torch.topk(w, k=1)
        ws[j] = torch.zeros_like(w).scatter(2, res.indices, res.values).reshape(ws[j].shape)
      else:
        k, d = int(next(draws)), int(next(draws))
        ws[j] = torch.rot90(ws[j], k=k, dims=(2, 3) if d == 0 else (0, 1))
    elif option in (13, 14):
      next(draws)
      mask = torch.round(oihw(next(draws)))
      ws[0] = ws[0] * (mask * 2 - 1 if option == 13 else mask)
    elif option == 15:
      next(draws)
      filters = [int(f) for f in next(draws)]
      ws[0] = ws[0].clone()
      ws[0][filters] *= -1
  return ws[0], b1, ws[1], b2


@pytest.mark.parametrize("option", range(17))
def test_each_edsr_weight_option_is_the_reference_line(option):
  torch = pytest.importorskip("torch")
  net = networks.EDSRCifar(num_blocks=1, features=4)
  rng = np.random.default_rng(option)
  params = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in net.init(0).items()}
  ours = {k: v.copy() for k, v in params.items()}
  recorder = Recorder(100 + option)
  da.edsr_weight_option(ours, option, net.residual_blocks(), recorder)
  oihw = lambda k: torch.from_numpy(np.ascontiguousarray(np.transpose(params[k], (3, 2, 0, 1))))
  bias = lambda k: torch.from_numpy(params[k].copy())
  with torch.no_grad():
    ref = _reference_edsr_option(torch, option, oihw("block0/conv1/kernel"),
                                 bias("block0/conv1/bias"), oihw("block0/conv2/kernel"),
                                 bias("block0/conv2/bias"), recorder.replay())
  names = ["block0/conv1/kernel", "block0/conv1/bias", "block0/conv2/kernel", "block0/conv2/bias"]
  for name, r in zip(names, ref):
    r = r.numpy()
    expected = np.transpose(r, (2, 3, 1, 0)) if r.ndim == 4 else r
    np.testing.assert_allclose(ours[name], expected, atol=1e-5, err_msg=f"{option} {name}")
  changed = any(not np.array_equal(ours[n], params[n]) for n in names)
  assert changed, option  # every option acts on this block
  for k in set(params) - set(names):
    np.testing.assert_array_equal(ours[k], params[k])


def test_edsr_weight_options_pick_the_reference_blocks():
  net = networks.EDSRCifar(num_blocks=16, features=4)
  blocks = net.residual_blocks()
  params = {k: v + 0.1 for k, v in net.init(0).items()}
  for option, allowed in [(0, {0, 3, 6, 9}), (1, {1, 4, 7}), (8, {1, 5, 9}), (10, {1, 5, 9}),
                          (11, set(range(15)))]:
    touched = set()
    for s in range(40):
      p = {k: v.copy() for k, v in params.items()}
      da.edsr_weight_option(p, option, blocks, np.random.default_rng(s))
      touched |= {i for i in range(16) if any(not np.array_equal(p[k], params[k])
                                               for k in params if k.startswith(f"block{i}/"))}
    assert touched <= allowed and len(touched) >= len(allowed) - 1, (option, touched)


def test_cae_option_0_flips_only_weight_i_and_bias_i_like_the_reference():
  torch = pytest.importorskip("torch")
  net = networks.DeepAugmentCAE(widths=(4, 6, 3, 4, 3, 5, 2))
  rng = np.random.default_rng(0)
  params = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in net.init(0).items()}
  for i, j in [(11, 13), (12, 12)]:
    ours = {k: v.copy() for k, v in params.items()}
    da.cae_weight_option(ours, 0, i, j, np.random.default_rng(1))
    # The reference's lines, with its bias_j = get_name(j, "weight"), on torch tensors:
    keys = {n: n for n, _, _ in networks.CAE_LAYERS}
    w = {k: torch.from_numpy(np.ascontiguousarray(np.transpose(v, (3, 2, 0, 1))))
         if v.ndim == 4 else torch.from_numpy(v.copy()) for k, v in params.items()}
    weight_i, bias_i = keys[networks.CAE_LAYERS[i][0]] + "/kernel", \
        networks.CAE_LAYERS[i][0] + "/bias"
    weight_j = networks.CAE_LAYERS[j][0] + "/kernel"
    bias_j = weight_j
    w[weight_i] = torch.flip(w[weight_i], (0,))
    w[bias_i] = torch.flip(w[bias_i], (0,))
    w[weight_j] = torch.flip(w[weight_j], (0,))
    w[bias_j] = torch.flip(w[bias_j], (0,))
    for k, v in w.items():
      expected = np.transpose(v.numpy(), (2, 3, 1, 0)) if v.ndim == 4 else v.numpy()
      np.testing.assert_array_equal(ours[k], expected, err_msg=f"{i} {j} {k}")


def test_cae_sequential_negations_cancel_on_repeated_filters():
  # Option 1 negates w[k], b[k] once per draw: a filter drawn twice is back as it was.
  p = {"d_block_1/conv1/kernel": np.ones((3, 3, 2, 4), np.float32),
       "d_block_1/conv1/bias": np.ones(4, np.float32)}

  class Fixed:
    def integers(self, n, size):
      return np.array([1, 2, 2, 3, 1, 0, 0, 0, 0, 0, 0, 0])[:size]
  da.cae_weight_option(p, 1, 11, 11, Fixed())
  # draws: 1, 2, 2, 3, 1, then 0 seven times: 1 and 2 cancel, 3 negated, 0 odd -> negated
  np.testing.assert_array_equal(p["d_block_1/conv1/bias"], [-1, 1, 1, -1])
  np.testing.assert_array_equal(p["d_block_1/conv1/kernel"][0, 0, 0], [-1, 1, 1, -1])


@pytest.mark.parametrize("option", [6, 7, 8])
def test_cae_latent_mixing_convs_match_torch(option):
  torch = pytest.importorskip("torch")
  code = np.random.default_rng(0).uniform(-1, 1, (1, 4, 4, 12)).astype(np.float32)
  recorder = Recorder(option)
  latent, scale = da.cae_latent_distortion(recorder, 12, option)
  assert scale is None
  ours = latent(tf.constant(code)).numpy()
  draws = recorder.replay()
  next(draws)  # the seed of position masks
  z = torch.zeros(12, 12, 3, 3)  # cae_32x32x32_zero_pad_bin.py options 6-8
  if option == 8:
    sx, sy = next(draws)
  for j in range(12):
    if option in (6, 7):
      z[j, j, 1, 1] = 1
    if option == 7 and next(draws) < 0.5:
      other, (dx, dy) = int(next(draws)), next(draws)
      z[j, other, int(dx), int(dy)] = 1  # torch's index -1 is the last
    if option == 8:
      if next(draws) < 0.2:
        sx, sy = next(draws)
      z[j, j, int(sx), int(sy)] = 1
  if option == 6:
    z = z + (torch.from_numpy(next(draws).astype(np.float32)) - 0.5) * 0.2
  x = torch.from_numpy(code.transpose(0, 3, 1, 2).copy())
  ref = torch.nn.functional.conv2d(x, z, padding=1).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_cae_latent_flips_and_permutation_hand_checked():
  code = np.arange(2 * 2 * 3 * 12, dtype=np.float32).reshape(2, 2, 3, 12)
  latent, _ = da.cae_latent_distortion(np.random.default_rng(0), 12, 3)
  out = latent(tf.constant(code)).numpy()
  assert sorted(out[0, 0, 0, :10]) == list(code[0, 0, 0, :10])  # the first 10 permuted
  np.testing.assert_array_equal(out[..., 10:], code[..., 10:])
  for seed in range(6):  # option 5 flips every channel over the drawn spatial axes
    rng, replay = np.random.default_rng(seed), np.random.default_rng(seed)
    replay.integers(0, 2 ** 31 - 1, size=2)  # the draw of the mask seed comes first
    dims = [int(d) for d in replay.permutation(3)[:2]]
    latent, _ = da.cae_latent_distortion(rng, 12, 5)
    out = latent(tf.constant(code)).numpy()
    expected = code
    if 1 in dims:
      expected = expected[:, ::-1]
    if 2 in dims:
      expected = expected[:, :, ::-1]
    np.testing.assert_array_equal(out, expected)  # images never mix (no batch flip)
