"""The corruption stage of the training step (seed 003 App. A "Combining data augmentation
methods"): (DeepAugment data) -> pad-crop-flip -> AdA -> AugMix.

DeepAugment data and pad-crop-flip come from the input pipeline (rgd.data.datasets). AdA needs the
classifier, so it runs in the training step; AugMix must come after it, so with AdA it runs in
the step too (without AdA, AugMix can run in the input pipeline: AUGMENTATION='augmix').
`CorruptionStage` is an option of `rgd.training.objectives.Objective` (`Objective.corruption`),
which wraps whichever objective is chosen (`objectives.Corrupted`): the AdA images *replace* the
clean ones, as in the seed's saddle-point problem (Eq. 3), and every following term (CE, or
TRADES' clean and adversarial terms) sees them.

With `jsd_weight > 0` (AugMix's Jensen-Shannon consistency, weight 12 in the AugMix reference)
the stage also returns two more AugMix views; the loss is then the objective's plus
jsd_weight * JS(f(x_1), f(x_2), f(x_3)) with x_1 the un-mixed image (`objectives.JensenShannon`),
as the reference (`cifar.py`) computes it: clean, aug1, aug2 in one forward pass.
"""
from absl import logging
import gin
import tensorflow as tf

from rgd.corruptions import ada as ada_lib
from rgd.corruptions import networks
from rgd.augment.augmix import AugMix
from rgd.errors import ConfigError


@gin.configurable
def make_ada(network="edsr_baseline_x4", weights_path=None, network_kwargs=None,
             nu=ada_lib.NU, steps=ada_lib.STEPS, num_groups=None, ssim_threshold=0.3, seed=0):
  """AdA with corruption network `network` (rgd.corruptions.networks) and its weights
  (`weights_path`, an npz: the published 'edsr_baseline_x4' / 'deepaugment_cae' converted by
  tools/convert_corruption_net.py, or rgd's 'edsr_cifar' / 'cae_cifar' trained by
  rgd.train_corruption_net). Without weights, a freshly initialised network (only for
  debugging: it does not reconstruct its input)."""
  net = networks.get_network(network, **(network_kwargs or {}))
  if weights_path:
    params = networks.load_params(weights_path, net, seed)
  else:
    logging.warning("make_ada: no weights_path; AdA uses an untrained %s (debug only)", network)
    params = net.init(seed)
  return ada_lib.AdA(net, params, nu=nu, steps=steps, num_groups=num_groups,
                     ssim_threshold=ssim_threshold)


@gin.configurable
class CorruptionStage:
  """AdA and/or AugMix inside the training step; `jsd_weight` adds AugMix's JS term."""

  def __init__(self, ada=None, augmix=None, jsd_weight=0.0):
    if jsd_weight and augmix is None:
      raise ConfigError("CorruptionStage: jsd_weight needs augmix (the JS term compares AugMix "
                       "views)")
    if augmix is True:
      augmix = AugMix()
    self.ada, self.augmix, self.jsd_weight = ada, augmix, float(jsd_weight)

  def __call__(self, classifier_fn, images, soft_labels, seed):
    """(images, views): the corrupted images, and for the JS term the two extra AugMix views
    (else None). `seed` is the step's int32 [2] seed."""
    replica = tf.distribute.get_replica_context()
    rid = replica.replica_id_in_sync_group if replica is not None else 0
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), rid)
    s_ada, s_mix = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if self.ada is not None:
      images = self.ada(classifier_fn, images, soft_labels, s_ada)
    if self.augmix is None:
      return images, None
    seeds = tf.unstack(tf.random.experimental.stateless_split(s_mix, 3))
    if not self.jsd_weight:
      return self.augmix.augment(images, seeds[0]), None
    # The reference's JS term: the un-mixed image is the first of three views.
    return images, (self.augmix.augment(images, seeds[1]), self.augmix.augment(images, seeds[2]))


@gin.configurable
def deepaugment_mixing_ratio(num_copies=1):
  """Share of real images per batch when training on the clean set plus `num_copies`
  DeepAugment copies, each image drawn uniformly from their union (seed 003 App. A: "draw
  random samples either from the clean training dataset, or from the DeepAugment-processed
  training set"): 1 / (1 + num_copies)."""
  if num_copies < 1:
    raise ConfigError(f"num_copies must be >= 1, got {num_copies}")
  return 1.0 / (1 + num_copies)
