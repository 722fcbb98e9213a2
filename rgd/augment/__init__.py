"""Data augmentations of Rebuffi et al. 2021 ("seed 000", Sec. 6.2) for TRADES training.

The baseline, pad-4-crop and horizontal flip, always runs in `rgd.data.datasets.make_train_dataset`
(`augment=True`). Everything else runs after it, on each replica batch, through the
`batch_augment_fn(batch, seed) -> batch` hook of that function: `make_batch_augment(name)`
returns the hook. A batch is dict(image float32 [b, H, W, 3] in [0, 1], label float32 soft
targets [b, K], is_real bool [b]); real and generated examples are augmented alike. Randomness
is stateless from the int32 [2] seed, so each op gives the same result eagerly and in
`tf.data.map`, and a resumed pipeline replays it.

  name           op                                             module
  'none'         baseline only (also 'pad_crop_flip')           -
  'cutout'       Cutout, 18-px window (seed 000 Fig. 9b)        patches.Cutout
  'cutmix'       CutMix, area ~ Beta(1, 1) (seed 000's choice)  patches.CutMix
  'ricap'        RICAP, boundary ~ Beta(0.3, 0.3)               patches.RICAP
  'mixup'        MixUp, lam ~ Beta(alpha, alpha)                mixup.MixUp
  'autoaugment'  AutoAugment, CIFAR-10 policy                   policies.AutoAugment
  'randaugment'  RandAugment (N, M)                             policies.RandAugment
  'augmix'       AugMix, width 3, depth 1-3 (seed 003)          rgd.augment.augmix.AugMix

Names joined by '+' run in order ('autoaugment+cutout'). Parameters come from `params` or from
gin bindings of the classes (`CutMix.window_length = 20`), so a gin file only has to set
`train_and_evaluate.batch_augmentation = %AUGMENTATION`.

With CutMix, MixUp and RICAP the labels become soft mixed targets. In TRADES only the
cross-entropy term uses them; the inner maximisation of the KL divergence needs no label at all
(docs/augmentations.md explains why DeepMind's code insists on the KL attack with CutMix).
"""
from rgd.augment.augmix import AugMix
from rgd.augment.common import split_seed
from rgd.augment.mixup import MixUp
from rgd.augment.patches import CutMix
from rgd.augment.patches import Cutout
from rgd.augment.patches import RICAP
from rgd.augment.patches import box_mask
from rgd.augment.patches import sample_boxes
from rgd.augment.policies import AutoAugment
from rgd.augment.policies import RandAugment
from rgd.errors import ConfigError

AUGMENTATIONS = {
    "cutout": Cutout,
    "cutmix": CutMix,
    "ricap": RICAP,
    "mixup": MixUp,
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
    "augmix": AugMix,
}
BASELINE = ("none", "pad_crop_flip")  # done by rgd.data.datasets before the hook


def make_batch_augment(name, **params):
  """The `batch_augment_fn(batch, seed) -> batch` for augmentation `name`, or None for the
  baseline ('none', 'pad_crop_flip', None or ''). `params` go to the op's constructor."""
  if name is None or name in BASELINE or name == "":
    if params:
      raise ConfigError(f"Augmentation {name!r} takes no parameters, got {sorted(params)}")
    return None
  if not isinstance(name, str):
    raise ConfigError(f"Augmentation name must be a string, got {name!r}")
  parts = [p.strip().lower() for p in name.split("+")]
  unknown = [p for p in parts if p not in AUGMENTATIONS]
  if unknown:
    raise ConfigError(f"Unknown augmentation {unknown[0]!r} in {name!r}; choose from "
                      f"{sorted(AUGMENTATIONS) + list(BASELINE)}, or join names with '+'")
  if len(parts) > 1 and params:
    raise ConfigError(f"Parameters {sorted(params)} are ambiguous for the composite "
                      f"augmentation {name!r}: bind them per op in gin (e.g. Cutout.window_length)")
  ops = []
  for part in parts:
    cls = AUGMENTATIONS[part]
    try:
      ops.append(cls(**params))
    except TypeError as e:
      raise ConfigError(f"Bad parameters {sorted(params)} for augmentation {part!r} "
                        f"({cls.__name__}): {e}") from e
  if len(ops) == 1:
    return ops[0]

  def composite(batch, seed):
    for op, s in zip(ops, split_seed(seed, len(ops))):
      batch = op(batch, s)
    return batch
  return composite
