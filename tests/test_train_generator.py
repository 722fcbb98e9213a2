"""rgd.train_generator (rgd.edm.training): EDM's schedules, a resume that reproduces the
weights exactly (on a ram:// model directory, i.e. through tf.io.gfile), the exported generator,
the gin files."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd.edm import training as tg
from rgd.edm import store

TINY = ["edm_unet.model_channels = 4", "edm_unet.channel_mult = (1,)",
        "edm_unet.num_blocks = 1", "edm_unet.attn_resolutions = ()",
        "edm_unet.dropout = 0.1", "edm_unet.label_dropout = 0.2"]


@pytest.fixture
def tiny_gin():
  gin.clear_config()
  gin.parse_config(TINY)
  yield
  gin.clear_config()


def test_edm_learning_rate_ramp_and_ema_half_life():
  # training_loop.py: lr * min(cur_nimg / (lr_rampup_kimg * 1000), 1); at step t, cur_nimg = t B.
  sched = tg.RampUpLearningRate(1e-3, 512, 10e6)
  assert float(sched(0)) == 0.0
  assert float(sched(1000)) == pytest.approx(1e-3 * 512e3 / 10e6)
  assert float(sched(10**6)) == pytest.approx(1e-3)
  # ema_beta = 0.5 ** (B / min(halflife, 0.05 * cur_nimg)): B images are 1/1000 of a half-life.
  assert float(tg.ema_beta(10**6, 512, 0.5e6, 0.05)) == pytest.approx(0.5 ** (512 / 0.5e6))
  assert float(tg.ema_beta(100, 512, 0.5e6, 0.05)) == pytest.approx(0.5 ** (1 / 0.05 / 100))
  assert float(tg.ema_beta(0, 512, 0.5e6, 0.05)) == 0.0   # first step copies the weights
  g = tf.constant([np.nan, np.inf, -np.inf, 2.0])
  np.testing.assert_array_equal(tg.nan_to_num(g).numpy(), [0, 1e5, -1e5, 2.0])


def _weights(model_dir):
  net, info = store.load(model_dir)
  return net.get_weights(), info


KW = dict(dataset=None, batch_size=8, learning_rate=1e-2, lr_rampup_mimg=0.0,
          ema_halflife_mimg=1e-5, checkpoint_every=2, log_every=1, sample_every=4,
          samples_per_class=2, sample_steps=2)


def _train(model_dir):
  x, y = make_images(24, num_classes=3, size=8, seed=1)
  return tg.train_generator(model_dir, num_steps=4, images=x, labels=y, **KW)


@pytest.fixture(scope="module")
def full_run():
  """4 uninterrupted steps in ram://gen2/run: (losses, EMA weights, generator.json)."""
  gin.clear_config()
  gin.parse_config(TINY)
  try:
    history = _train("ram://gen2/run")
    weights, info = _weights("ram://gen2/run")
  finally:
    gin.clear_config()
  return history, weights, info


def test_resume_reproduces_uninterrupted_weights_on_ram_filesystem(full_run, tiny_gin):
  full, a, info = full_run
  # A kill after step 3: the checkpoint index still names step 2 (CheckpointManager rewrites
  # it last), so re-running the same command resumes from step 2.
  ckpt_dir = "ram://gen2/run/checkpoints"
  tf.compat.v1.train.update_checkpoint_state(ckpt_dir, ckpt_dir + "/ckpt-2",
                                             all_model_checkpoint_paths=[ckpt_dir + "/ckpt-2"])
  resumed = _train("ram://gen2/run")
  b, _ = _weights("ram://gen2/run")
  assert info["step"] == 4 and info["num_classes"] == 3 and info["image_shape"] == [8, 8, 3]
  assert len(full) == 4 and len(resumed) == 2 and resumed == full[2:]
  before = store.build(info["unet"])
  moved = max(np.abs(u - v).max() for u, v in zip(a, before.get_weights()))
  assert moved > 1e-3   # the EMA network really trained
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  # TensorBoard got the per-class grids: 3 rows of 2 images of 8x8 (+2 px frames).
  shapes = [tf.io.decode_png(v.tensor.string_val[2]).shape
            for path in tf.io.gfile.glob("ram://gen2/run/train/events*")
            for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value
            if v.tag == "samples_per_class_ema"]
  assert shapes and all(s == (3 * 10 + 2, 2 * 10 + 2, 3) for s in shapes), shapes


def test_sigterm_checkpoints_exports_and_resumes_bit_exact(full_run, tiny_gin, monkeypatch):
  """A real SIGTERM to this process after step 2 (RGD_TERM_AT): the run checkpoints that step,
  exports the generator of that step and returns; the same call then finishes the run with the
  uninterrupted run's weights, bit for bit. The operative config is written (once per call)."""
  full, a, _ = full_run
  monkeypatch.setenv("RGD_TERM_AT", "2")
  first = _train("ram://gen3/cut")
  monkeypatch.delenv("RGD_TERM_AT")
  assert first == full[:2]
  assert tf.train.latest_checkpoint("ram://gen3/cut/checkpoints").endswith("ckpt-2")
  assert store.load_info("ram://gen3/cut")["step"] == 2
  assert "train_generator.keep_checkpoints = 3" in tf.io.gfile.GFile(
      "ram://gen3/cut/operative_config.gin").read()
  assert _train("ram://gen3/cut") == full[2:]
  b, info = _weights("ram://gen3/cut")
  assert info["step"] == 4
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)


def test_gin_files_give_edm_cifar10_settings_and_a_tiny_debug_net():
  gin.clear_config()
  try:
    gin.parse_config_file("gin/edm_cifar10.gin")
    cifar = store.unet_kwargs((32, 32, 3), 10)
    q = lambda name: gin.query_parameter(f"train_generator.{name}")
    # NVlabs/edm train.py defaults and --arch=ddpmpp (training_loop.py for the ramp-ups).
    assert (q("batch_size"), q("learning_rate"), q("ema_halflife_mimg"), q("lr_rampup_mimg"),
            q("duration_mimg"), q("ema_rampup_ratio")) == (512, 10e-4, 0.5, 10.0, 200.0, 0.05)
    assert q("augment_p") == 0.12   # train.py --augment
    gin.clear_config()
    gin.parse_config_file("gin/edm_debug.gin")
    debug = store.unet_kwargs((32, 32, 3), 10)
  finally:
    gin.clear_config()
  assert {k: cifar[k] for k in ("model_channels", "channel_mult", "num_blocks",
                                "attn_resolutions", "dropout")} == dict(
      model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
      dropout=0.13)
  assert store.build(debug).count_params() < 100_000
