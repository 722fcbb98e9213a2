"""The corruption networks' reconstruction training lowers the loss on a tiny set, resumes, and
writes weights that load back; the gin files parse."""
import os

import gin
import numpy as np
import pytest

from rgd import errors
from rgd.corruptions import training as tcn
from rgd.corruptions import networks

from conftest import make_images


@pytest.mark.parametrize("network,kwargs,loss,lr,factor", [
    ("edsr_cifar", {"num_blocks": 1, "features": 8}, "l1", 3e-3, 0.7),
    # The rounded 2x2x8 code limits what 40 steps can do: a smaller but clear drop.
    ("cae_cifar", {"features": (8, 8), "num_blocks": 1, "code_channels": 8}, "mse", 3e-3, 0.85)])
def test_reconstruction_loss_goes_down(tmp_path, network, kwargs, loss, lr, factor):
  images, _ = make_images(32, size=16)
  history = tcn.train_corruption_net(str(tmp_path), network, kwargs, None, batch_size=16,
                                     num_steps=40, learning_rate=lr, loss=loss, log_every=10,
                                     checkpoint_every=20, images=images)
  assert len(history) == 4 and history[-1] < factor * history[0], history
  net = networks.get_network(network, **kwargs)
  params = networks.load_params(str(tmp_path / "weights.npz"), net)
  x = images[:4].astype(np.float32) / 255
  err = lambda p: float(tcn.LOSSES[loss](net.apply(p, x), x))
  assert err(params) < err(net.init(0))  # the exported weights are the trained ones
  # Asking for more steps resumes from the last checkpoint (step 40), not from scratch.
  more = tcn.train_corruption_net(str(tmp_path), network, kwargs, None, batch_size=16,
                                  num_steps=50, learning_rate=lr, loss=loss, log_every=10,
                                  images=images)
  assert len(more) == 1 and more[0] < history[0]


def test_load_params_names_a_mismatch(tmp_path):
  net = networks.EDSRCifar(num_blocks=1, features=4)
  networks.save_params(str(tmp_path / "w.npz"), net.init(0))
  with pytest.raises(ValueError, match="w.npz"):
    networks.load_params(str(tmp_path / "w.npz"), networks.EDSRCifar(num_blocks=2, features=4))
  with pytest.raises(errors.ConfigError, match="nope.npz"):
    networks.load_params(str(tmp_path / "nope.npz"), net)


@pytest.mark.parametrize("path", ["gin/edsr.gin", "gin/cae.gin"])
def test_gin_files_build_the_networks(path):
  gin.clear_config()
  try:
    gin.parse_config_file(path)
    kwargs = gin.query_parameter("train_corruption_net.network_kwargs")
    name = gin.query_parameter("train_corruption_net.network")
  finally:
    gin.clear_config()
  params = networks.get_network(name, **kwargs).init(0)
  n = sum(v.size for v in params.values())
  if name == "edsr_cifar":  # EDSR-baseline: head 3->64, 33 convs 64->64, tail 64->3 (3x3, biases)
    assert n == (27 * 64 + 64) + 33 * (9 * 64 * 64 + 64) + (9 * 64 * 3 + 3)
  else:  # CAE: 5x5 convs 3->64->128->96, 2 x 3 residual blocks of two 128->128 convs, decoder
    assert n == (75 * 64 + 64) + (25 * 64 * 128 + 128) + (25 * 128 * 96 + 96) + 12 * (
        9 * 128 * 128 + 128) + (9 * 96 * 512 + 512) + (9 * 128 * 256 + 256) + (9 * 64 * 12 + 12)
