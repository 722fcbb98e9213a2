"""The recipes of the seeds' other data sets (CIFAR-100, SVHN, TinyImageNet, certified CIFAR-100):
every file parses, says what it reproduces, and trains two steps on mock data of its data set's
shape and class count (tfds' mock data offline; the miniature tiny-imagenet-200 folder), with
a small model bound over the file's own data and objective settings; the certified recipes
follow the reference commands (crop, held-out images, recalibration)."""
import json
import os
import re

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import make_images
from test_data_tiny_imagenet import write_tiny_imagenet
from rgd import cli, models
from rgd.data import recalibration, registry, tfrecord
from rgd.training import loop

# gin file -> (data, number of classes, image size, small model bound for the run).
RECIPES = {
    "gin/cifar100_wrn28_10_ddpm.gin": ("cifar100", 100, 32, "tiny_cnn"),
    "gin/cifar100_wrn70_16_ddpm.gin": ("cifar100", 100, 32, "tiny_cnn"),
    "gin/cifar100_wrn70_16_cutmix_ddpm.gin": ("cifar100", 100, 32, "tiny_cnn"),
    "gin/svhn_wrn28_10.gin": ("svhn_cropped", 10, 32, "tiny_cnn"),
    "gin/svhn_wrn28_10_ddpm.gin": ("svhn_cropped", 10, 32, "tiny_cnn"),
    "gin/svhn_wrn28_10_cutmix_ddpm.gin": ("svhn_cropped", 10, 32, "tiny_cnn"),
    "gin/tiny_imagenet_wrn28_10.gin": ("tiny_imagenet", 200, 64, "tiny_cnn"),
    "gin/tiny_imagenet_wrn28_10_ddpm.gin": ("tiny_imagenet", 200, 64, "tiny_cnn"),
    "gin/linf_dist_net_cifar100_edm.gin": ("cifar100", 100, 32, "linf_dist_net-3-16"),
    "gin/sortnet_cifar100_edm.gin": ("cifar100", 100, 32, "sortnet-3-16"),
    "gin/gloro_liresnet_l_cifar100_edm.gin": ("cifar100", 100, 32, "liresnet-L2W8"),
    "gin/sortnet_dropout_edm.gin": ("cifar10", 10, 32, "sortnet_dropout-3-16"),
    "gin/lot_l_cifar100_edm.gin": ("cifar100", 100, 32, "lot-5-2-lln"),
    "gin/lot_s_edm.gin": ("cifar10", 10, 32, "lot-5-2"),
    "gin/lot_m_edm.gin": ("cifar10", 10, 32, "lot-5-2"),
    "gin/lot_l_edm.gin": ("cifar10", 10, 32, "lot-5-2"),
}
# Published models of each row (the file's own choice, replaced by a small one in the runs).
MODELS = {
    "gin/cifar100_wrn28_10_ddpm.gin": "wrn-28-10", "gin/cifar100_wrn70_16_ddpm.gin": "wrn-70-16",
    "gin/cifar100_wrn70_16_cutmix_ddpm.gin": "wrn-70-16", "gin/svhn_wrn28_10.gin": "wrn-28-10",
    "gin/svhn_wrn28_10_ddpm.gin": "wrn-28-10", "gin/svhn_wrn28_10_cutmix_ddpm.gin": "wrn-28-10",
    "gin/tiny_imagenet_wrn28_10.gin": "wrn-28-10",
    "gin/tiny_imagenet_wrn28_10_ddpm.gin": "wrn-28-10",
    "gin/linf_dist_net_cifar100_edm.gin": "linf_dist_net-6-5120",
    "gin/sortnet_cifar100_edm.gin": "sortnet-6-5120",
    "gin/gloro_liresnet_l_cifar100_edm.gin": "liresnet-L18W256",
    "gin/sortnet_dropout_edm.gin": "sortnet_dropout-6-5120",
    "gin/lot_l_cifar100_edm.gin": "lot-L-lln", "gin/lot_s_edm.gin": "lot-S",
    "gin/lot_m_edm.gin": "lot-M", "gin/lot_l_edm.gin": "lot-L",
}
MOCK_EXAMPLES = 24


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def recipe_data(tmp_path_factory):
  """Shared by every run: generated TFRecord shards for each (image size, classes) and a
  miniature tiny-imagenet-200 folder (decoded once into its cache)."""
  root = tmp_path_factory.mktemp("recipe_data")
  patterns = {}
  for size, k in ((32, 10), (32, 100), (64, 200)):
    x, _ = make_images(32, size=size, seed=size + k)
    y = np.arange(32) * 7 % k
    folder = os.path.join(root, f"gen{size}_{k}")
    os.makedirs(folder)
    tfrecord.write_shard(tfrecord.shard_name(os.path.join(folder, "gen"), 0, 1),
                         [tfrecord.serialize(a, b) for a, b in zip(x, y)])
    patterns[size, k] = os.path.join(folder, "gen-*.tfrecord")
  tiny = write_tiny_imagenet(os.path.join(root, "tiny-imagenet-200"), per_class=1)
  return dict(generated=patterns, tiny=tiny)


def _q(name):
  """A gin parameter's value, through a macro if it is bound to one."""
  value = gin.query_parameter(name)
  while str(value).startswith("%"):
    value = gin.query_parameter(str(value))
  return value


def _includes(path):
  text = open(path).read()
  return re.findall(r"^include '([^']+)'", text, re.M)


def _parse(path, bindings=()):
  base = ["GENERATED='unused-*.tfrecord'"]
  if "tiny_imagenet" in path:
    base.append("DATASET='tiny_imagenet:/unused'")
  cli.parse_gin([path], base + list(bindings))


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_recipe_headers_say_what_they_reproduce(path):
  header = "".join(l for l in open(path) if l.startswith("#"))
  assert re.search(r"seed 00[014]", header) and re.search(r"Table \d|App\. B", header), path
  assert re.search(r"[Pp]ublished", header), path
  assert f"--gin_file={path}" in header, path
  assert "Required macro" in header or "No required macros" in header, path
  _parse(path)
  data, k, size, _ = RECIPES[path]
  assert _q("get_model.name") == MODELS[path]
  if data != "tiny_imagenet":
    assert _q("train_and_evaluate.dataset") == data
  if "gin/generated.gin" in _includes(path) or "edm" in path:
    assert _q("train_and_evaluate.generated_pattern") == "unused-*.tfrecord"
  else:  # the rows without DDPM: real data only
    with pytest.raises(ValueError):
      _q("train_and_evaluate.generated_pattern")


def test_seed_001_settings_per_data_set():
  """Batch 1024, LR 0.1 per 256, cosine with 10 warm-up epochs, 400 CIFAR-10-equivalent
  epochs, with and without generated data (DeepMind's experiment.py); SVHN never flips."""
  for path in ("gin/svhn_wrn28_10.gin", "gin/svhn_wrn28_10_ddpm.gin",
               "gin/tiny_imagenet_wrn28_10.gin", "gin/cifar100_wrn28_10_ddpm.gin"):
    gin.clear_config()
    _parse(path)
    q = _q
    assert (q("train_and_evaluate.batch_size"), q("train_and_evaluate.num_epochs"),
            q("train_and_evaluate.epoch_size"), q("learning_rate_schedule.schedule"),
            q("learning_rate_schedule.base_learning_rate"),
            q("learning_rate_schedule.warmup_epochs")) == (1024, 400, 50000, "cosine", 0.1, 10)
    with pytest.raises(ValueError):  # the data set's statistics, not a gin binding
      q("get_model.normalization")
  assert registry.get("svhn_cropped").flip is False


CERTIFIED_LINF = ["gin/linf_dist_net_edm.gin", "gin/sortnet_edm.gin",
                  "gin/sortnet_dropout_edm.gin", "gin/linf_dist_net_cifar100_edm.gin",
                  "gin/sortnet_cifar100_edm.gin"]


@pytest.mark.parametrize("path", CERTIFIED_LINF)
def test_certified_linf_recipes_follow_the_reference_commands(path):
  """Crop with padding 3 in edge mode and flip, all 50,000 training images, and the mean-shift
  recalibration of the reference: SortNet's update_bn (augmented training images, batch 512),
  none for L_inf-dist-net-v2."""
  _parse(path)
  from rgd.data import augmentation  # pylint: disable=g-import-not-at-top
  assert augmentation.baseline_augmentation() == dict(pad=3, pad_mode="edge", flip=True)
  assert _q("train_and_evaluate.num_validation") == 0
  rec = recalibration.mean_shift_recalibration("cifar10", np.zeros((2, 32, 32, 3), np.uint8), 0)
  if "linf_dist_net" in path:
    assert rec is None
  else:
    assert rec.augment and rec.batch_size == 512


@pytest.mark.parametrize("path", ["gin/gloro_liresnet_l_cifar100_edm.gin",
                                  "gin/gloro_liresnet_xs.gin", "gin/gloro_liresnet_m_edm.gin"])
def test_gloro_recipes_follow_hu23(path):
  """hu23's cifar.py: RandomCrop(32, padding=4) with zeros, as rgd's default; its train.py
  trains on all training images (its validation loader is the test split)."""
  _parse(path)
  from rgd.data import augmentation  # pylint: disable=g-import-not-at-top
  assert augmentation.baseline_augmentation() == dict(pad=4, pad_mode="constant", flip=True)
  assert _q("train_and_evaluate.num_validation") == 0


@pytest.mark.parametrize("path,epochs", [("gin/lot_s_edm.gin", 600), ("gin/lot_m_edm.gin", 600),
                                         ("gin/lot_l_edm.gin", 600),
                                         ("gin/lot_l_cifar100_edm.gin", 200)])
def test_lot_recipes_follow_the_reference_command(path, epochs):
  """train_robust.py: SGD momentum 0.9 (not Nesterov), lr 0.1 at batch 256, no weight decay,
  plain CE (gamma 0); utils.py: pad-4 crop and flip; seed 004: cosine, 70% generated, 600
  epochs for the best CIFAR-10 rows, CIFAR-10's epochs (200) on CIFAR-100."""
  _parse(path)
  from rgd.data import augmentation  # pylint: disable=g-import-not-at-top
  assert augmentation.baseline_augmentation() == dict(pad=4, pad_mode="constant", flip=True)
  q = _q
  assert (q("train_and_evaluate.batch_size"), q("train_and_evaluate.num_epochs"),
          q("train_and_evaluate.weight_decay"), q("train_and_evaluate.num_validation"),
          q("train_and_evaluate.mixing_ratio"), q("train_and_evaluate.generated_label_smoothing"),
          q("train_and_evaluate.ema_decay")) == (256, epochs, 0.0, 0, 0.3, 0.0, 0.0)
  assert (q("_make_optimizer.name"), q("_make_optimizer.nesterov"),
          q("learning_rate_schedule.schedule"), q("learning_rate_schedule.base_learning_rate"),
          q("learning_rate_schedule.warmup_epochs")) == ("sgd", False, "cosine", 0.1, 0)
  assert (q("Objective.kind"), q("Objective.norm"), q("CertifiedObjective.gamma")) == (
      "lot", "l2", 0.0)
  assert abs(q("Objective.eps") - 36 / 255) < 1e-12


def _run_bindings(path, recipe_data):
  data, k, size, model = RECIPES[path]
  bindings = ["train_and_evaluate.num_steps=2", "BATCH_SIZE=8",
              "train_and_evaluate.image_summary_every=0", "train_and_evaluate.log_every=1",
              "train_and_evaluate.checkpoint_every=2", f"get_model.name='{model}'",
              f"GENERATED='{recipe_data['generated'][size, k]}'"]
  if model == "tiny_cnn":
    bindings += ["get_model.width=4", "Objective.attack_steps=1"]
  if data == "tiny_imagenet":
    bindings.append(f"DATASET='tiny_imagenet:{recipe_data['tiny']}'")
  _parse(path, bindings)
  if _q("train_and_evaluate.num_validation"):
    bindings += ["train_and_evaluate.num_validation=8", "train_and_evaluate.eval_every=2",
                 "train_and_evaluate.eval_batch_size=8"]
  gin.clear_config()
  _parse(path, bindings)
  return data, k, size, model


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(RECIPES))
def test_recipe_trains_two_steps_on_its_data(path, recipe_data, tmp_path):
  data, k, size, model = _run_bindings(path, recipe_data)
  model_dir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    loop.train_and_evaluate(model_dir, tf.distribute.get_strategy())
  net = models.load(os.path.join(model_dir, "model.keras"))
  assert net.input_shape == (None, size, size, 3) and net.output_shape == (None, k)
  info = json.loads(open(os.path.join(model_dir, "model.json")).read())
  assert info["step"] == 2 and info["num_classes"] == k and len(info["class_names"]) == k
  if model == "tiny_cnn":  # the data set's statistics are in the export
    key = registry.get(info["dataset"]).normalization
    layer = net.get_layer("normalize")
    np.testing.assert_allclose(np.ravel(layer.mean), models.NORMALIZATION[key][0], rtol=1e-6)
