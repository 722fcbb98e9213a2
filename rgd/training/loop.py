"""The classifier's training of rgd.train: `train_and_evaluate(model_dir, strategy)`, configured by
gin, run by the loop skeleton (rgd.runtime.loop).

It builds the input, the models, the optimizer and the objective under the strategy's scope; the
skeleton restores the newest checkpoint, runs the distributed step, applies the NaN policy, logs
to TensorBoard and checkpoints until the step budget is spent or SIGTERM asks it to stop. This
module supplies the step, the validation of the weight-averaged model (exported as model.keras
when it is the best so far), the image summaries and the final export (last.keras).
"""

import collections
import dataclasses
import math
import os

from absl import logging
import gin
import keras
import tensorflow as tf

from rgd import augment as augment_lib, models
from rgd.augment import visualize
from rgd.data import datasets, recalibration as recalibration_lib, shard_check
from rgd.datagen import gaussian_stream
from rgd.errors import ConfigError
from rgd.runtime import checkpointing, loop as skeleton, nan_policy as nan_policy_lib, seeds
from rgd.runtime import strategy as strategy_lib
from rgd.runtime import metric_names as names
from rgd.training import init_checkpoint as init_checkpoint_lib
from rgd.runtime import weight_average
from rgd.training import objectives, optimizers, schedules, validation
from rgd.training.trainer import RobustTrainer, make_distributed_step

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}

# The training input: the iterator, the real images it draws from, and the run's length.
Input = collections.namedtuple(
    "Input", "iterator images labels num_classes total_steps steps_per_epoch num_pipelines "
    "pipeline_id")
# Everything that is trained, averaged or checkpointed, built in the strategy's scope.
TrainState = collections.namedtuple(
    "TrainState", "network avg_network optimizer schedule objective trainer ema best_score")


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """`train_and_evaluate`'s data arguments (its docstring)."""
  dataset: str
  num_classes: int = None
  batch_size: int = 1024
  num_epochs: float = 400
  epoch_size: int = 50_000
  num_steps: int = None
  generated_pattern: str = None
  mixing_ratio: float = 0.3
  augment: bool = True
  batch_augmentation: object = None
  num_validation: int = datasets.NUM_VALIDATION
  seed: int = 0
  data_dir: str = None
  generated_label_smoothing: float = datasets.GENERATED_LABEL_SMOOTHING


@dataclasses.dataclass(frozen=True)
class StateConfig:
  """`train_and_evaluate`'s arguments for what is trained: the optimizer's global batch (for
  the schedule), weight decay, EMA decay, the seed and the starting weights."""
  batch_size: int = 1024
  weight_decay: float = 5e-4
  ema_decay: float = 0.995
  seed: int = 0
  init_checkpoint: str = None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """`train_and_evaluate`'s validation and image-summary arguments."""
  eval_every: int = 1000
  eval_batch_size: int = 256
  image_summary_every: int = 1000


# The one value the distributed step returns that is not a sum over examples.
_PER_STEP = names.EMA_DECAY


@gin.configurable(denylist=["model_dir", "strategy"])
def train_and_evaluate(model_dir, strategy, dataset=gin.REQUIRED, num_classes=None,
                       batch_size=1024, num_epochs=400, epoch_size=50_000, num_steps=None,
                       generated_pattern=None, mixing_ratio=0.3, augment=True,
                       batch_augmentation=None, weight_decay=5e-4, ema_decay=0.995,
                       num_validation=datasets.NUM_VALIDATION, eval_every=1000,
                       eval_batch_size=256, checkpoint_every=500, keep_checkpoints=3,
                       log_every=50, image_summary_every=1000, precision="float32",
                       jit_compile=False, seed=0, data_dir=None,
                       generated_label_smoothing=datasets.GENERATED_LABEL_SMOOTHING,
                       nan_policy="stop", max_consecutive_skips=100, init_checkpoint=None):
  """Trains and returns the final logs (dict of floats).

  Lengths are in CIFAR-10-equivalent epochs of `epoch_size` examples (seed 001 counts 400 of
  50k images at batch 1024, about 19.5k steps) unless `num_steps` is given.
  `generated_pattern` is a glob of TFRecord shards (rgd.data.tfrecord), or 'gaussian' (the
  class-conditional Gaussian fitted to the training images, sampled on the fly,
  rgd.datagen.gaussian_stream); with it each batch holds
  round(mixing_ratio * batch_size) real examples (seed 001: 0.3), their labels smoothed by
  `generated_label_smoothing` (0 for DeepAugment copies, whose labels are the real ones).
  `data_dir` is tfds' data directory (default ~/tensorflow_datasets).
  `nan_policy` ('stop' or 'skip_step') and `max_consecutive_skips`: rgd.runtime.nan_policy.
  `seed`: the initial weights and every random stream of the run (rgd.runtime.seeds).
  `init_checkpoint`: a run directory or .keras file whose weights the network and its average
  start from, with a fresh optimizer (rgd.training.init_checkpoint).
  The arguments travel in groups: InputConfig, StateConfig, EvalConfig and the skeleton's
  Cadence (log_every, checkpoint_every, keep_checkpoints).
  """
  data = InputConfig(dataset, num_classes, batch_size, num_epochs, epoch_size, num_steps,
                     generated_pattern, mixing_ratio, augment, batch_augmentation,
                     num_validation, seed, data_dir, generated_label_smoothing)
  state_config = StateConfig(batch_size, weight_decay, ema_decay, seed, init_checkpoint)
  evaluation = EvalConfig(eval_every, eval_batch_size, image_summary_every)
  cadence = skeleton.Cadence(log_every=log_every, checkpoint_every=checkpoint_every,
                             keep_checkpoints=keep_checkpoints)
  policy = nan_policy_lib.NanPolicy(nan_policy, max_consecutive_skips)
  if precision not in PRECISIONS:
    raise ConfigError(f"train_and_evaluate.precision={precision!r}: expected one of "
                      f"{sorted(PRECISIONS)}")
  keras.mixed_precision.set_global_policy(PRECISIONS[precision])
  # Seeds Python, numpy and TF: the initial weights are a function of `seed`. Everything random
  # later uses stateless ops keyed by rgd.runtime.seeds.
  keras.utils.set_random_seed(seed)
  task = ClassifierTask(model_dir, strategy, data, state_config, evaluation, policy,
                        jit_compile)
  logging.info("Training %d steps at global batch %d (%d per replica) on %d replica(s) of %s, "
               "precision %s; %d real training images%s. Model directory %s.",
               task.total_steps, batch_size, batch_size // strategy.num_replicas_in_sync,
               strategy.num_replicas_in_sync, type(strategy).__name__, precision,
               len(task.inputs.images), f", generated data {generated_pattern} (mixing ratio "
               f"{mixing_ratio})" if generated_pattern else "", model_dir)
  return skeleton.run(task, model_dir, strategy, cadence, policy).logs


class ClassifierTask(skeleton.Task):
  """The robust classifier's part of the loop: its step, validation, image summaries and
  exports (model.keras and last.keras with their .json)."""

  summaries = ("train", "validation")
  per_step = (_PER_STEP,)

  def __init__(self, model_dir, strategy, data, state_config, evaluation, policy, jit_compile):
    self.model_dir, self.strategy, self.data, self.evaluation = (model_dir, strategy, data,
                                                                 evaluation)
    self.inputs = create_input(strategy, data)
    self.state = create_train_state(strategy, self.inputs, state_config, policy, data.dataset)
    self.total_steps = self.inputs.total_steps
    self.iterator = self.inputs.iterator
    self.separate_input_state = self.inputs.num_pipelines > 1
    self._policy = policy
    self._distributed_step = make_distributed_step(strategy, self.state.trainer, self.state.ema,
                                                   jit_compile)
    self.validator = None
    # What an l_inf-dist Net / SortNet recalibrates its mean shifts on (gin; rgd.data.recalibration).
    self.recalibration = recalibration_lib.mean_shift_recalibration(data.dataset,
                                                                    self.inputs.images, data.seed)
    if data.num_validation and evaluation.eval_every:
      val_images, val_labels = datasets.load_split(data.dataset, "validation",
                                                   self.inputs.num_classes,
                                                   data.num_validation, data.data_dir)
      self.validator = validation.make_validator(
          strategy, self.state.avg_network, self.state.objective, val_images, val_labels,
          evaluation.eval_batch_size, data.seed, train_images=self.recalibration)
    state = self.state
    # What the exports were trained for: rgd.evaluate --model_dir defaults to it.
    self.run_info = dict(dataset=data.dataset, num_classes=self.inputs.num_classes,
                         data_dir=data.data_dir,
                         class_names=datasets.class_names_of(data.dataset, data.data_dir),
                         **state.objective.run_info())  # objective, norm, eps, threat

  def checkpoint_objects(self):
    return dict(network=self.state.network, avg_network=self.state.avg_network,
                optimizer=self.state.optimizer, best_score=self.state.best_score)

  def current_step(self):
    return int(self.state.optimizer.iterations.numpy())

  def step(self):
    return self._distributed_step(_next_batch(self.strategy, self.inputs,
                                              self.data.generated_pattern))

  def interval_logs(self, step, last):
    del last
    return dict(learning_rate=float(self.state.schedule(step - 1)))

  def after_step(self, step, context):
    logs = {}
    if self.validator and (step % self.evaluation.eval_every == 0 or step == self.total_steps):
      logs.update(_validate(self.validator, self.state, step, context.writers, context.chief,
                            self.model_dir, self.run_info))
    every = self.evaluation.image_summary_every
    if context.chief and every and step % every == 0:
      _image_summary(context.writers["train"], self.state.network, self.state.objective,
                     self.inputs.images[:8], self.inputs.labels[:8], step, self.data.seed)
    return logs

  def finish(self, step):
    if not self.validator:  # the exported model carries recalibrated mean shifts (update_bn)
      validation.recalibrate(self.state.avg_network, self.recalibration, step,
                             self.evaluation.eval_batch_size)
    _export(self.model_dir, "last", self.state.avg_network, step, self.run_info)
    if not self.validator:
      _export(self.model_dir, "model", self.state.avg_network, step, self.run_info)


def create_input(strategy, data):
  """The training input of this worker (rgd.data.datasets) for an InputConfig, after checking
  the generated shards: missing, empty, truncated or mis-shaped shards are a DataError now, not
  mid-run."""
  num_classes = datasets.num_classes_of(data.dataset, data.num_classes)
  train_split = "train" if data.num_validation else "train_full"
  images, labels = datasets.load_split(data.dataset, train_split, num_classes,
                                       data.num_validation, data.data_dir)
  num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
  if _has_shards(data.generated_pattern):
    shard_check.check_generated_shards(data.generated_pattern, images.shape[1:])
  batch_augment_fn = (augment_lib.make_batch_augment(data.batch_augmentation)
                      if data.batch_augmentation else None)
  # The crop padding (gin) and the data set's flip (SVHN: none), rgd.data.augmentation.
  crop = datasets.baseline_augmentation(dataset_flip=datasets.spec_of(data.dataset).flip)
  train_ds = datasets.make_train_dataset(
      images, labels, num_classes, data.batch_size, num_replicas=strategy.num_replicas_in_sync,
      num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
      generated_pattern=data.generated_pattern, generated_fn=_generated_fn(data, images, labels,
                                                                          num_classes),
      mixing_ratio=data.mixing_ratio, seed=data.seed,
      augment=data.augment, batch_augment_fn=batch_augment_fn,
      generated_label_smoothing=data.generated_label_smoothing, **crop)
  epoch_size = data.epoch_size or len(images)
  total_steps = int(data.num_steps or math.ceil(data.num_epochs * epoch_size / data.batch_size))
  steps_per_epoch = epoch_size / data.batch_size
  return Input(iter(train_ds), images, labels, num_classes, total_steps, steps_per_epoch,
               num_pipelines, pipeline_id)


def _has_shards(generated_pattern):
  """Whether the generated data are TFRecord shards (to check and to name in errors), not
  none and not the Gaussian sampled on the fly."""
  return bool(generated_pattern) and generated_pattern != datasets.GAUSSIAN


def _generated_fn(data, images, labels, num_classes):
  """For GENERATED='gaussian': the class-conditional Gaussian fitted to this run's training
  images, sampled on the fly (rgd.datagen.gaussian_stream; seed 001 Sec. 3.2). None for
  records."""
  if data.generated_pattern != datasets.GAUSSIAN:
    return None
  return lambda batch, pipelines, pipeline_id: gaussian_stream.examples(
      images, labels, num_classes, batch, data.seed, pipelines, pipeline_id)


def create_train_state(strategy, inputs, config, policy, dataset=None):
  """Models, optimizer, objective, trainer and weight average for a StateConfig, created in the
  strategy's scope (Model Garden's pattern); the objective is gin's `Objective`. The models take
  the images' size and `dataset`'s statistics unless gin binds `get_model.normalization`."""
  objective = objectives.Objective()
  shape = inputs.images.shape[1:]
  norm = datasets.model_normalization(dataset) if dataset else {}
  with strategy.scope():
    network = models.get_model(num_classes=inputs.num_classes, input_shape=shape, **norm)
    avg_network = models.get_model(num_classes=inputs.num_classes, input_shape=shape, **norm)
    avg_network.set_weights(network.get_weights())
    if config.init_checkpoint:  # checkpoints of this run, restored later, take precedence
      init_checkpoint_lib.load_into(config.init_checkpoint, network, avg_network)
    schedule = schedules.learning_rate_schedule(config.batch_size, inputs.total_steps,
                                                inputs.steps_per_epoch)
    optimizer = optimizers.make_optimizer(schedule)
    optimizer.build(network.trainable_variables)
    trainer = RobustTrainer(network, objective, config.batch_size, config.weight_decay,
                            config.seed, skip_nonfinite=policy.trainer_skips)
    trainer.compile(optimizer=optimizer)
    objective.bind(network, optimizer.iterations, inputs.total_steps)
    ema = weight_average.WeightAverage(network, avg_network, config.ema_decay)
    # Validation score of model.keras: robust accuracy, or clean accuracy without an attack.
    best_score = tf.Variable(-1.0, trainable=False, name="best_validation_score")
    policy.checkpoint_objects()  # its variable, in the scope
  return TrainState(network, avg_network, optimizer, schedule, objective, trainer, ema,
                    best_score)


def _next_batch(strategy, inputs, generated_pattern):
  try:
    element = next(inputs.iterator)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    if _has_shards(generated_pattern):  # name the bad shard
      shard_check.raise_for_read_error(e, generated_pattern, inputs.images.shape[1:],
                                       inputs.num_pipelines, inputs.pipeline_id)
    raise
  return strategy_lib.distribute_stacked(strategy, element)


def _validate(validator, state, step, writers, chief, model_dir, run_info):
  """Validates the averaged model; exports it as model.keras when it is the best so far (the
  most robust; without an attack, the most accurate)."""
  clean, robust = validator(step)
  logging.info("step %d validation: clean %.4f, %s %.4f", step, clean, validator.robust_name,
               robust)
  if "validation" in writers:
    with writers["validation"].as_default(step=step):
      tf.summary.scalar("accuracy/clean", clean)
      tf.summary.scalar(f"accuracy/{validator.robust_name}", robust)
  score = validator.score(clean, robust)
  if score > float(state.best_score.numpy()):
    state.best_score.assign(score)
    if chief:
      _export(model_dir, "model", state.avg_network, step,
              dict(run_info, clean_accuracy=clean, robust_accuracy=robust))
  return dict(val_clean_accuracy=clean, val_robust_accuracy=robust)


def _export(model_dir, name, model, step, info):
  checkpointing.export_keras(model, os.path.join(model_dir, f"{name}.keras"))
  checkpointing.atomic_write_json(os.path.join(model_dir, f"{name}.json"),
                                  dict(info, step=int(step), weights="exponential moving average"))


def _image_summary(writer, network, objective, images, labels, step, seed):
  """Clean vs adversarial training inputs (and their amplified difference) in TensorBoard."""
  if objective.attack is None:
    return
  x = datasets.to_float(images)
  labels = tf.one_hot(labels, network.output_shape[-1])
  x_adv = objective.adversarial_examples(lambda z: network(z, training=False), x, labels,
                                         seeds.key(seed, "image_summary", step))
  diff = tf.clip_by_value(0.5 + 10.0 * (x_adv - x), 0.0, 1.0)
  with writer.as_default(step=step):
    grid = visualize.image_grid(tf.stack([x, x_adv, diff]))  # rows: clean, adversarial, diff
    tf.summary.image("clean_adversarial_difference", grid)
