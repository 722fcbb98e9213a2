"""The optimizer of a training run (gin: `_make_optimizer.*`, a name kept so that every gin file
and operative config written before keeps working)."""
import gin
import keras
from rgd.errors import ConfigError

NAMES = ("sgd", "adam", "adamw")


@gin.configurable("_make_optimizer", denylist=["schedule"])
def make_optimizer(schedule, name="sgd", clipnorm=None, global_clipnorm=None, beta_2=0.999,
                   epsilon=1e-7, weight_decay=None, decay_only=None, nesterov=True):
  """SGD with Nesterov momentum 0.9 (seeds 000/001; DeepMind's experiment.py `optimizer`), weight
  decay added to the loss by the trainer on kernels only. 'adam' / 'adamw': the certified
  recipes (rgd/certified), with the references' beta_2 and epsilon, decoupled `weight_decay`
  (AdamW, as torch: w -= lr * wd * w) and `global_clipnorm` (torch `clip_grad_norm_` clips the
  norm of all gradients together; Keras' `clipnorm` clips each variable on its own).
  `decay_only`: (variable) names of the only variables AdamW decays (SortNet decays its logit
  scale only, `main.py`: `'weight_decay': 0` for the distance layers' parameters).
  `nesterov=False`: SGD with plain (heavy-ball) momentum 0.9, as torch.optim.SGD's default
  (the LOT reference, `train_robust.py` :146)."""
  if name not in NAMES:
    raise ConfigError(f"_make_optimizer.name={name!r}: expected one of {NAMES}")
  if clipnorm is not None and global_clipnorm is not None:
    raise ConfigError("_make_optimizer: set clipnorm or global_clipnorm, not both")
  clip = dict(clipnorm=clipnorm, global_clipnorm=global_clipnorm)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate=schedule, beta_2=beta_2, epsilon=epsilon, **clip)
  if name == "adamw":
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay or 0.0,
                                 beta_2=beta_2, epsilon=epsilon, **clip)
    if decay_only:
      # Keras decays all but the variables whose name matches: match every other name.
      others = "^(?!(" + "|".join(decay_only) + r")(:\d+)?$)"   # TF names may end in :0
      opt.exclude_from_weight_decay(var_names=[others])
    return opt
  return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=bool(nesterov),
                              **clip)
