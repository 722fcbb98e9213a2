"""The optimizer of a training run (gin: `_make_optimizer.*`, a name kept so that every gin file
and operative config written before keeps working)."""
import gin
import keras


@gin.configurable("_make_optimizer", denylist=["schedule"])
def make_optimizer(schedule, name="sgd", clipnorm=None):
  """SGD with Nesterov momentum 0.9 (seeds 000/001; DeepMind's experiment.py `optimizer`), weight
  decay added to the loss by the trainer on kernels only. 'adam': the certified recipes
  (rgd/certified; LiResNet and l_inf-dist Net train with Adam)."""
  if name == "adam":
    return keras.optimizers.Adam(learning_rate=schedule, clipnorm=clipnorm)
  if name != "sgd":
    raise ValueError(f"_make_optimizer.name={name!r}: expected 'sgd' or 'adam'")
  return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True,
                              clipnorm=clipnorm)
