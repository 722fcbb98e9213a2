"""The 64x64 generator in use: TinyImageNet's classes among ImageNet's, class-restricted
sampling of an iDDPM-preconditioned ADM through the sampling job's restartable chunks
(rgd.datagen.adm_sampling), and ADM trained by rgd.train_generator (gin/edm_imagenet64_adm.gin)."""
import json
import os
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images
from rgd.datagen import adm_sampling, sample_job
from rgd.edm import adm, imagenet_classes, iddpm, store
from rgd.edm import training as tg
from rgd.errors import ConfigError


def test_imagenet_and_tinyimagenet_class_lists():
  im, tiny = imagenet_classes.IMAGENET_WNIDS, imagenet_classes.TINY_IMAGENET_WNIDS
  assert len(im) == len(set(im)) == 1000 and list(im) == sorted(im)
  assert len(tiny) == len(set(tiny)) == 200 and set(tiny) <= set(im)
  # Known indices of guided-diffusion's (sorted-wnid) order: 0 tench, 1 goldfish, 285 Egyptian
  # cat, 999 toilet tissue; wnids.txt starts with Egyptian cat and ends with African elephant.
  assert (im[0], im[1], im[285], im[999]) == ("n01440764", "n01443537", "n02124075",
                                               "n15075141")
  assert imagenet_classes.TINY_IMAGENET_WNIDS_FILE_ORDER[0] == "n02124075"
  assert imagenet_classes.TINY_IMAGENET_WNIDS_FILE_ORDER[-1] == "n02504458"
  subset = imagenet_classes.class_subset("tinyimagenet")
  # Label k = the k-th sorted TinyImageNet wnid (rgd.data's order) = increasing ImageNet index.
  assert len(subset) == 200 and subset == sorted(subset) and subset[0] == 1   # goldfish
  assert [im[i] for i in subset] == list(tiny)
  assert imagenet_classes.class_subset("285, n01443537") == [285, 1]
  assert imagenet_classes.class_subset("imagenet") == list(range(1000))
  for bad, message in (("1000", "neither"), ("n0", "neither"), ("1,1", "twice"), ("", "expected")):
    with pytest.raises(ConfigError, match=message):
      imagenet_classes.class_subset(bad)


def _tiny_adm(num_classes=6):
  """An iDDPM-style ADM (eps + variance outputs) of 8x8 images with weights that matter."""
  tf.keras.utils.set_random_seed(0)
  net = adm.adm_unet(image_shape=(8, 8, 3), num_classes=num_classes, out_channels=6,
                     model_channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(),
                     dropout=0.0)
  rng = np.random.default_rng(0)
  net.set_weights([w + 0.2 * rng.normal(size=w.shape).astype(np.float32)
                   for w in net.get_weights()])
  return net


@pytest.fixture(scope="module")
def subset_sampler():
  return adm_sampling.SubsetSampler(_tiny_adm(), [4, 1], seed=3, batch_per_device=2,
                                    num_steps=2)


def test_class_restricted_sampling_feeds_only_the_requested_classes(monkeypatch):
  seen = []
  original = iddpm.IDDPMPrecond.__call__

  def spy(self, x, sigma, labels, augment_labels=None, training=False):
    record = tf.py_function(lambda l: seen.append(l.numpy()) or 0, [labels], tf.int32)
    with tf.control_dependencies([record]):
      return original(self, x, sigma, tf.identity(labels), augment_labels, training)
  monkeypatch.setattr(iddpm.IDDPMPrecond, "__call__", spy)
  s = adm_sampling.SubsetSampler(_tiny_adm(), [4, 1], seed=3, batch_per_device=3, num_steps=2)
  images = s.sample(np.arange(5))
  assert images.shape == (5, 8, 8, 3) and images.dtype == np.uint8
  assert len(seen) >= 3   # the Heun loop's evaluations, traced once each
  for labels in seen:     # one-hot over the 6 classes, only ever class 4 or 1, by index
    assert labels.shape[1] == 6 and np.all(labels.sum(1) == 1)
    assert set(labels.argmax(1)) <= {4, 1}
  assert list(seen[0].argmax(1)) == [4, 1, 4]            # indices 0, 1, 2
  assert list(s.imagenet_class_of(range(5))) == [4, 1, 4, 1, 4]
  assert list(sample_job.labels_of(range(5), s.num_classes)) == [0, 1, 0, 1, 0]
  with pytest.raises(ConfigError, match="classes"):
    adm_sampling.SubsetSampler(_tiny_adm(), [4, 6])
  with pytest.raises(ConfigError, match="guidance"):
    adm_sampling.SubsetSampler(_tiny_adm(), [4], guidance=2.0)


def test_images_depend_on_index_and_class_only(subset_sampler):
  a = subset_sampler.sample(np.arange(4))
  b = subset_sampler.sample(np.array([3, 2]))            # other batches, same indices
  np.testing.assert_array_equal(a[[3, 2]], b)
  other = adm_sampling.SubsetSampler(_tiny_adm(), [1, 4], seed=3, batch_per_device=2,
                                     num_steps=2)
  c = other.sample(np.arange(2))   # same seeds, classes swapped: the label changes the image
  assert np.abs(c.astype(int) - a[:2].astype(int)).max() > 0


class _Killed(Exception):
  pass


class _DiesAfter:
  """The sampler, killed after `n` chunks."""
  def __init__(self, inner, n):
    self.inner, self.n, self.num_classes = inner, n, inner.num_classes

  def sample(self, indices):
    if self.n == 0:
      raise _Killed()
    self.n -= 1
    return self.inner.sample(indices)


def test_restart_neither_loses_nor_duplicates_an_image(subset_sampler, tmp_path):
  whole = str(tmp_path / "whole")
  paths, label_path = sample_job.sample_to_folder(subset_sampler, whole, 5, 2)
  killed = str(tmp_path / "killed")
  with pytest.raises(_Killed):
    sample_job.sample_to_folder(_DiesAfter(subset_sampler, 1), killed, 5, 2)
  assert sorted(os.listdir(killed)) == ["chunk-00000000.npy"]
  resumed, resumed_labels = sample_job.sample_to_folder(_DiesAfter(subset_sampler, 2), killed,
                                                        5, 2)   # only chunks 1 and 2 remain
  got = np.concatenate([np.load(p) for p in resumed])
  want = np.concatenate([np.load(p) for p in paths])
  assert got.shape == (5, 8, 8, 3)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(np.load(resumed_labels), [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(np.load(label_path), [0, 1, 0, 1, 0])


def test_opener_samples_a_pt_file_into_a_source(tmp_path):
  # The entry make_tfrecords calls: guided-diffusion's state dict (.pt, a small config of the
  # twin) -> chunks of uint8 images labelled by their position in the class subset.
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
  import adm_torch_twin  # pylint: disable=g-import-not-at-top
  from rgd.interop import guided_diffusion  # pylint: disable=g-import-not-at-top
  cfg = dict(adm_torch_twin.GD_SMALL, channel_mult=(1,), attention_resolutions=())
  torch.manual_seed(0)
  gd = adm_torch_twin.GuidedDiffusionTwin(**cfg)
  adm_torch_twin.randomize_torch(gd)
  torch.save(gd.state_dict(), str(tmp_path / "small.pt"))
  gd_config = guided_diffusion.config_with(
      image_size=8, num_channels=128, num_res_blocks=1, attention_resolutions=(),
      channel_mult=(1,), num_classes=10)
  config, opener = adm_sampling.make_opener(str(tmp_path / "small.pt"), "7,2,5", 5, seed=1,
                                            chunk_size=2, batch_per_device=2,
                                            gd_config=gd_config, num_steps=2)
  assert config["source"]["kind"] == "adm" and config["source"]["imagenet_classes"] == [7, 2, 5]
  assert config["source"]["s_churn"] == 80.0   # EDM's sampler for this checkpoint unless overridden
  json.dumps(config)
  source = opener(str(tmp_path / "cache"))
  assert sorted(os.listdir(tmp_path / "cache" / "adm")) == [
      "chunk-00000000.npy", "chunk-00000001.npy", "chunk-00000002.npy", "label.npy"]
  np.testing.assert_array_equal(np.load(tmp_path / "cache" / "adm" / "label.npy"),
                                [0, 1, 2, 0, 1])
  assert source.num_images == 5 and source.image_shape == (8, 8, 3)
  np.testing.assert_array_equal(source.labels, [0, 1, 2, 0, 1])
  assert source.read(0, 5).dtype == np.uint8


TINY_ADM = ["generator_architecture.name = 'adm'", "adm_unet.model_channels = 8",
            "adm_unet.channel_mult = (1,)", "adm_unet.num_blocks = 1",
            "adm_unet.attn_resolutions = ()", "adm_unet.dropout = 0.1"]


def test_tiny_adm_trains_two_steps_and_reloads(tmp_path):
  gin.clear_config()
  try:
    gin.parse_config_file("gin/edm_imagenet64_adm.gin")
    gin.parse_config(TINY_ADM)
    x, y = make_images(16, num_classes=4, size=8, seed=2)
    history = tg.train_generator(str(tmp_path / "run"), dataset=None, images=x, labels=y,
                                 batch_size=8, num_steps=2, log_every=1, sample_every=0,
                                 checkpoint_every=2, lr_rampup_mimg=0.0)
  finally:
    gin.clear_config()
  assert len(history) == 2 and all(np.isfinite(history))
  net, info = store.load(str(tmp_path / "run"))
  assert info["unet"]["arch"] == "adm" and info["unet"]["augment_dim"] == 0
  assert info["unet"]["out_channels"] is None and net.output_shape == (None, 8, 8, 3)
  assert any(l.name == "dec_8x8_in0_norm0" for l in net.layers)   # DhariwalUNet's names
  assert len(net.inputs) == 3   # --augment=0: no augmentation-label input


def test_gin_file_gives_edm_imagenet64_adm_settings():
  gin.clear_config()
  try:
    gin.parse_config_file("gin/edm_imagenet64_adm.gin")
    kwargs = store.unet_kwargs((64, 64, 3), 1000)
    q = lambda name: gin.query_parameter(f"train_generator.{name}")
    settings = (q("batch_size"), q("duration_mimg"), q("learning_rate"), q("ema_halflife_mimg"),
                q("lr_rampup_mimg"), q("ema_rampup_ratio"), q("augment_p"))
  finally:
    gin.clear_config()
  # NVlabs/edm README imagenet-64x64-cond-adm: --batch=4096 --duration=2500 --lr=1e-4
  # --ema=50 --augment=0 (training_loop.py ramp-ups); train.py --arch=adm; --dropout=0.10.
  assert settings == (4096, 2500.0, 1e-4, 50.0, 10.0, 0.05, 0.0)
  assert {k: kwargs[k] for k in ("arch", "model_channels", "channel_mult", "num_blocks",
                                 "attn_resolutions", "dropout", "channel_mult_emb")} == dict(
      arch="adm", model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
      attn_resolutions=[32, 16, 8], dropout=0.1, channel_mult_emb=4)
  with pytest.raises(ConfigError, match="generator_architecture.name='unet'"):
    store.generator_architecture("unet")


def test_adm_is_a_generator_of_the_labelling_job():
  """tools/make_tfrecords.py --generator=adm:PATH --classes=... reaches the sampler through the
  generator registry: the job's description names the subset and only the given overrides
  replace the ImageNet-64 sampler (nothing is read before the job opens the source)."""
  from rgd.datagen import generators  # pylint: disable=g-import-not-at-top
  images = generators.make("adm:/models/64x64_diffusion.pt", classes="7,2,5", num_images=6,
                           generator_seed=3, sampler_overrides={"num_steps": 2},
                           dataset="ignored", num_per_class=9)
  assert images.source["kind"] == "adm" and images.source["imagenet_classes"] == [7, 2, 5]
  assert images.source["num_steps"] == 2 and images.source["s_churn"] == 80.0
  assert (images.worker, images.num_workers) == (0, 1)
  with pytest.raises(ValueError, match="adm:PATH"):
    generators.make("adm")
