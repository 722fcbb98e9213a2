"""The training loop of rgd.train: `train_and_evaluate(model_dir, strategy)`, configured by gin.

It builds the input, the models, the optimizer and the objective under the strategy's scope,
restores the newest checkpoint, then runs the distributed step, logs to TensorBoard, validates
the weight-averaged model, exports the best and last of it and checkpoints, until the step
budget is spent or SIGTERM asks it to stop.
"""

import collections
import math
import os
import time

from absl import logging
import gin
import keras
import tensorflow as tf

from rgd import augment as augment_lib, models
from rgd.augment import visualize
from rgd.data import datasets, shard_check
from rgd.runtime import checkpointing, fileio, preemption, seeds, strategy as strategy_lib
from rgd.runtime.progress import format_duration
from rgd.training import init_checkpoint as init_checkpoint_lib, nan_policy as nan_policy_lib
from rgd.training import objectives, optimizers, schedules, validation, weight_average
from rgd.training.trainer import RobustTrainer, make_distributed_step

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}

# The training input: the iterator, the real images it draws from, and the run's length.
Input = collections.namedtuple(
    "Input", "iterator images labels num_classes total_steps steps_per_epoch num_pipelines "
    "pipeline_id")
# Everything that is trained, averaged or checkpointed, built in the strategy's scope.
TrainState = collections.namedtuple(
    "TrainState", "network avg_network optimizer schedule objective trainer ema best_score")


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
  `nan_policy` ('stop' or 'skip_step') and `max_consecutive_skips`: rgd.training.nan_policy.
  `seed`: the initial weights and every random stream of the run (rgd.runtime.seeds).
  `init_checkpoint`: a run directory or .keras file whose weights the network and its average
  start from, with a fresh optimizer (rgd.training.init_checkpoint).
  """
  policy = nan_policy_lib.NanPolicy(nan_policy, max_consecutive_skips)
  if precision not in PRECISIONS:
    raise ValueError(f"Unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
  keras.mixed_precision.set_global_policy(PRECISIONS[precision])
  # Seeds Python, numpy and TF: the initial weights are a function of `seed`. Everything random
  # later uses stateless ops keyed by rgd.runtime.seeds.
  keras.utils.set_random_seed(seed)
  chief = strategy_lib.is_chief(strategy)
  fileio.makedirs(model_dir)
  if chief:  # an export killed before its rename left a `.tmp-*` file
    fileio.remove_stale_temporaries(model_dir)

  inputs = create_input(strategy, dataset, num_classes, batch_size, num_epochs, epoch_size,
                        num_steps, generated_pattern, mixing_ratio, augment, batch_augmentation,
                        num_validation, seed, data_dir, generated_label_smoothing)
  logging.info("Training %d steps at global batch %d (%d per replica) on %d replica(s) of %s, "
               "precision %s; %d real training images%s. Model directory %s.",
               inputs.total_steps, batch_size, batch_size // strategy.num_replicas_in_sync,
               strategy.num_replicas_in_sync, type(strategy).__name__, precision,
               len(inputs.images), f", generated data {generated_pattern} (mixing ratio "
               f"{mixing_ratio})" if generated_pattern else "", model_dir)
  state = create_train_state(strategy, inputs, batch_size, weight_decay, ema_decay, seed,
                             policy, init_checkpoint)
  manager = checkpointing.TrainingCheckpoints(
      strategy, os.path.join(model_dir, "checkpoints"), keep_checkpoints, inputs.iterator,
      dict(network=state.network, avg_network=state.avg_network, optimizer=state.optimizer,
           best_score=state.best_score, **policy.checkpoint_objects()),
      separate_input_state=inputs.num_pipelines > 1)
  if manager.restore():
    logging.info("Resumed from %s at step %d.", manager.latest_checkpoint,
                 int(state.optimizer.iterations.numpy()))
  distributed_step = make_distributed_step(strategy, state.trainer, state.ema, jit_compile)
  validator = None
  if num_validation and eval_every:
    val_images, val_labels = datasets.load_split(dataset, "validation", inputs.num_classes,
                                                 num_validation, data_dir)
    validator = validation.make_validator(strategy, state.avg_network, state.objective,
                                          val_images, val_labels, eval_batch_size, seed,
                                          train_images=inputs.images)
  # What the exports were trained for: rgd.evaluate --model_dir defaults to it.
  run_info = dict(dataset=dataset, num_classes=inputs.num_classes, objective=state.objective.kind,
                  norm=state.objective.norm, eps=state.objective.eps, data_dir=data_dir)

  writers = {}
  if chief:
    writers = {k: tf.summary.create_file_writer(os.path.join(model_dir, k))
               for k in ("train", "validation")}
  preempt = preemption.for_strategy(strategy)  # SIGTERM on any worker stops all at one step
  step = int(state.optimizer.iterations.numpy())
  sums, t0, step0, start = {}, time.time(), step, time.time()
  logs = {}
  try:
    while step < inputs.total_steps:
      batch = _next_batch(strategy, inputs, generated_pattern)
      fetched = {k: float(v) for k, v in distributed_step(batch).items()}
      step += 1
      out = policy.after_step(fetched, step, manager.latest_checkpoint)
      if not out:
        logging.warning("step %d: non-finite loss or gradients; update skipped "
                        "(nan_policy='skip_step', %d in a row).", step, policy.consecutive)
      for k, v in out.items():
        if k != _PER_STEP:  # everything else is a per-replica sum over examples
          sums[k] = sums.get(k, 0.0) + v
      if step == step0 + 1 and chief:
        _write_operative_config(model_dir, writers["train"], step)
      if step % log_every == 0 or step == inputs.total_steps:
        logs = _log_train(sums, fetched, step, inputs.total_steps, t0, step0, start,
                          float(state.schedule(step - 1)),
                          policy.skipped_total if policy.trainer_skips else None,
                          writers.get("train"))
        sums, t0, step0 = {}, time.time(), step
      if validator and (step % eval_every == 0 or step == inputs.total_steps):
        logs.update(_validate(validator, state, step, writers, chief, model_dir, run_info))
      if chief and image_summary_every and step % image_summary_every == 0:
        _image_summary(writers["train"], state.network, state.objective, inputs.images[:8],
                       inputs.labels[:8], step, seed)
      stop = preempt.should_stop()  # once a step: a collective under several workers
      if step % checkpoint_every == 0 or step == inputs.total_steps or stop:
        manager.save(checkpoint_number=step)
      if stop:
        logging.warning("Checkpointed at step %d after SIGTERM; exiting.", step)
        return logs
  finally:
    preempt.restore()
    for w in writers.values():
      w.flush()

  if chief:
    _export(model_dir, "last", state.avg_network, step, run_info)
    if not validator:
      _export(model_dir, "model", state.avg_network, step, run_info)
  return logs


def create_input(strategy, dataset, num_classes, batch_size, num_epochs, epoch_size, num_steps,
                 generated_pattern, mixing_ratio, augment, batch_augmentation, num_validation,
                 seed, data_dir, generated_label_smoothing):
  """The training input of this worker (rgd.data.datasets), after checking the generated
  shards: missing, empty, truncated or mis-shaped shards are a DataError now, not mid-run."""
  num_classes = datasets.num_classes_of(dataset, num_classes)
  train_split = "train" if num_validation else "train_full"
  images, labels = datasets.load_split(dataset, train_split, num_classes, num_validation,
                                       data_dir)
  num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
  if generated_pattern and generated_pattern != datasets.GAUSSIAN:  # no shards to check
    shard_check.check_generated_shards(generated_pattern, images.shape[1:])
  batch_augment_fn = (augment_lib.make_batch_augment(batch_augmentation)
                      if batch_augmentation else None)
  train_ds = datasets.make_train_dataset(
      images, labels, num_classes, batch_size, num_replicas=strategy.num_replicas_in_sync,
      num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
      generated_pattern=generated_pattern, mixing_ratio=mixing_ratio, seed=seed,
      augment=augment, batch_augment_fn=batch_augment_fn,
      generated_label_smoothing=generated_label_smoothing)
  total_steps = int(num_steps or math.ceil(num_epochs * (epoch_size or len(images)) /
                                           batch_size))
  steps_per_epoch = (epoch_size or len(images)) / batch_size
  return Input(iter(train_ds), images, labels, num_classes, total_steps, steps_per_epoch,
               num_pipelines, pipeline_id)


def create_train_state(strategy, inputs, batch_size, weight_decay, ema_decay, seed, policy,
                       init_checkpoint=None):
  """Models, optimizer, objective, trainer and weight average, created in the strategy's scope
  (Model Garden's pattern); the objective is gin's `Objective`."""
  objective = objectives.Objective()
  shape = inputs.images.shape[1:]
  with strategy.scope():
    network = models.get_model(num_classes=inputs.num_classes, input_shape=shape)
    avg_network = models.get_model(num_classes=inputs.num_classes, input_shape=shape)
    avg_network.set_weights(network.get_weights())
    if init_checkpoint:  # checkpoints of this run, restored later, take precedence
      init_checkpoint_lib.load_into(init_checkpoint, network, avg_network)
    schedule = schedules.learning_rate_schedule(batch_size, inputs.total_steps,
                                                inputs.steps_per_epoch)
    optimizer = optimizers.make_optimizer(schedule)
    optimizer.build(network.trainable_variables)
    trainer = RobustTrainer(network, objective, batch_size, weight_decay, seed,
                            skip_nonfinite=policy.trainer_skips)
    trainer.compile(optimizer=optimizer)
    objective.bind(network, optimizer.iterations, inputs.total_steps)
    ema = weight_average.WeightAverage(network, avg_network, ema_decay)
    # Validation score of model.keras: robust accuracy, or clean accuracy without an attack.
    best_score = tf.Variable(-1.0, trainable=False, name="best_validation_score")
    policy.checkpoint_objects()  # its variable, in the scope
  return TrainState(network, avg_network, optimizer, schedule, objective, trainer, ema,
                    best_score)


def _next_batch(strategy, inputs, generated_pattern):
  try:
    element = next(inputs.iterator)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    if generated_pattern and generated_pattern != datasets.GAUSSIAN:  # name the bad shard
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
  score = robust if state.objective.kind != "standard" else clean
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


def _write_operative_config(model_dir, writer, step):
  config = gin.operative_config_str()
  fileio.atomic_write_text(os.path.join(model_dir, "operative_config.gin"), config)
  with writer.as_default(step=step):
    # Markdown code block keeps gin's layout in TensorBoard's text tab.
    tf.summary.text("operative_config", "```\n" + config + "\n```")


# The one value the distributed step returns that is not a sum over examples.
_PER_STEP = "ema_decay"


def _log_train(sums, last, step, total_steps, t0, step0, start, lr, skipped_total, writer):
  """Means over the interval's examples of every loss part the objective returned (so a new
  part, e.g. AugMix's `jsd`, reaches TensorBoard without touching this loop), accuracies, the
  learning rate, the last EMA decay, img/s and, under 'skip_step', the cumulative count of
  skipped steps."""
  n = max(sums.get("count", 1.0), 1.0)
  elapsed = time.time() - t0
  img_per_s = n / max(elapsed, 1e-9)
  logs = {"loss": sums.get("total", 0.0) / n}
  for k, v in sorted(sums.items()):
    if k in ("count", "total"):  # the divisor; logged as `loss` above
      continue
    logs[k.replace("_correct", "_accuracy")] = v / n
  logs.update(learning_rate=lr, images_per_second=img_per_s)
  if _PER_STEP in last:
    logs[_PER_STEP] = last[_PER_STEP]
  if skipped_total is not None:
    logs["skipped_steps"] = float(skipped_total)
  rate = (step - step0) / max(elapsed, 1e-9)
  eta = (total_steps - step) / max(rate, 1e-9)
  logging.info("step %d/%d (%.1f%%) %s | %.0f img/s | elapsed %s | ETA %s", step, total_steps,
               100.0 * step / total_steps,
               " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "images_per_second"),
               img_per_s, format_duration(time.time() - start), format_duration(eta))
  if writer is not None:
    with writer.as_default(step=step):
      for k, v in logs.items():
        tf.summary.scalar(k, v)
  return logs


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
