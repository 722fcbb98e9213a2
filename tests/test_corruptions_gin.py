"""The seed-003 gin files build what their headers say, and a training run with AdA + AugMix
runs end to end (tiny model, 2 steps) through the real entry point's function."""
import os

import gin
import numpy as np
import pytest

from rgd import cli
from rgd.training import loop
from rgd.training import objectives
from rgd.corruptions import ada, networks, stage
from rgd.augment import augmix

from conftest import write_npz_dataset


def _parse(files, bindings=()):
  gin.clear_config()
  cli.parse_gin(files, list(bindings))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def test_ada_augmix_gin_builds_the_seed_003_pipeline(tmp_path):
  weights = str(tmp_path / "edsr.npz")
  net = networks.EDSRBaselineX4(num_blocks=16, features=64)
  networks.save_params(weights, net.init(0))
  _parse(["gin/preact_resnet50_ada_augmix.gin"], [f"CORRUPTION_WEIGHTS='{weights}'"])
  objective = objectives.Objective()
  assert objective.name == "standard" and objective.threat is None
  c = objective.stage
  assert isinstance(c.ada, ada.AdA) and isinstance(c.augmix, augmix.AugMix)
  # The published network by default (seed 003 Sec. 2: DeepAugment's EDSR), x4 and back.
  assert isinstance(c.ada.network, networks.EDSRBaselineX4) and c.ada.network.downsample
  assert c.jsd_weight == 0 and c.ada.steps == 10 and c.ada.num_groups is None
  assert c.ada.ssim_threshold == 0.3
  assert c.ada.radii["head/kernel"] == pytest.approx(
      0.015 * np.linalg.norm(net.init(0)["head/kernel"]))
  assert c.augmix.width == 3 and c.augmix.depth == -1 and c.augmix.severity == 3
  assert gin.query_parameter("%BATCH_SIZE") == 256
  assert gin.query_parameter("train_and_evaluate.num_epochs") == 300
  assert gin.query_parameter("train_and_evaluate.weight_decay") == 1e-4
  assert gin.query_parameter("learning_rate_schedule.warmup_epochs") == 5
  assert gin.query_parameter("get_model.name") == "preact_resnet50"
  assert stage.deepaugment_mixing_ratio(10) == pytest.approx(1 / 11)


def test_rgd_own_network_by_macro_and_old_names_refused(tmp_path):
  weights = str(tmp_path / "edsr_cifar.npz")
  networks.save_params(weights, networks.EDSRCifar(num_blocks=16, features=64).init(0))
  _parse(["gin/preact_resnet50_ada.gin"], [f"CORRUPTION_WEIGHTS='{weights}'",
                                           "CORRUPTION_NETWORK='edsr_cifar'"])
  assert isinstance(objectives.Objective().stage.ada.network, networks.EDSRCifar)
  # The published network's gin with rgd's weights: the mismatch names the file.
  _parse(["gin/preact_resnet50_ada.gin"], [f"CORRUPTION_WEIGHTS='{weights}'"])
  with pytest.raises(Exception, match="edsr_cifar.npz"):
    objectives.Objective()
  with pytest.raises(ValueError, match="'edsr' is now 'edsr_cifar'"):
    networks.get_network("edsr")


def test_missing_weights_macro_fails_loudly():
  with pytest.raises(Exception, match="CORRUPTION_WEIGHTS|REQUIRED|required"):
    _parse(["gin/preact_resnet50_ada.gin"])
    objectives.Objective()


def test_ada_trades_gin_combines_both():
  _parse(["gin/wrn28_10_ada_trades.gin"], ["CORRUPTION_WEIGHTS=None"])  # debug: untrained net
  objective = objectives.Objective()
  assert objective.name == "trades" and isinstance(objective.stage.ada, ada.AdA)
  assert objective.stage.augmix is None and isinstance(objective.inner, objectives.Trades)


def test_training_run_with_ada_and_augmix(tmp_path):
  folder = write_npz_dataset(str(tmp_path / "data"), num_train=48, num_test=8, size=32)
  weights = str(tmp_path / "edsr.npz")
  networks.save_params(weights, {k: v + 0.01 for k, v in
                                 networks.EDSRBaselineX4(1, 4).init(0).items()})
  _parse(["gin/preact_resnet50_ada_augmix.gin"], [
      f"CORRUPTION_WEIGHTS='{weights}'", f"DATASET='npz:{folder}'",
      "make_ada.network_kwargs={'num_blocks': 1, 'features': 4}", "make_ada.steps=2",
      "get_model.name='tiny_cnn'", "get_model.width=4", "BATCH_SIZE=8",
      "train_and_evaluate.num_steps=2", "train_and_evaluate.num_validation=0",
      "train_and_evaluate.log_every=1", "train_and_evaluate.image_summary_every=0",
      "AugMix.width=1", "AugMix.depth=1", "CorruptionStage.jsd_weight=12.",
      "get_model.head_init='pytorch'"])
  import tensorflow as tf
  logs = loop.train_and_evaluate(str(tmp_path / "run"), tf.distribute.get_strategy())
  assert logs and all(np.isfinite(v) for v in logs.values()), logs
  assert (tmp_path / "run" / "model.keras").exists()
  # Every loss part the objective returns reaches TensorBoard: AugMix's Jensen-Shannon term
  # (weight 12) among them; with a random (not zero) head the three views disagree.
  logged = _scalars(str(tmp_path / "run" / "train"))
  assert set(logged["jsd"]) == {1, 2}, logged.keys()
  assert min(logged["jsd"].values()) > 1e-6, logged["jsd"]
  assert logged["loss"][2] == pytest.approx(logged["ce"][2] + 12.0 * logged["jsd"][2], rel=1e-5)


def _scalars(folder):
  """{tag: {step: value}} of the TensorBoard scalars under `folder`."""
  import glob  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for f in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(f):
      for v in event.summary.value:
        if v.metadata.plugin_data.plugin_name == "scalars":
          out.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
  return out
