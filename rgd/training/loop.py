"""The training loop of rgd.train: `train_and_evaluate(model_dir, strategy)`, configured by gin.

It builds the input, the models, the optimizer and the objective under the strategy's scope,
restores the newest checkpoint, then runs the distributed step, logs to TensorBoard, validates
the weight-averaged model, exports the best and last of it and checkpoints, until the step
budget is spent or SIGTERM asks it to stop.
"""
import math
import os
import time

from absl import logging
import gin
import keras
import tensorflow as tf

from rgd import augment as augment_lib, models
from rgd.attacks import losses, pgd
from rgd.augment import visualize
from rgd.data import datasets, shard_check
from rgd.errors import NonFiniteError
from rgd.runtime import checkpointing, fileio, strategy as strategy_lib
from rgd.runtime.progress import format_duration
from rgd.training import certified_validation, objectives, schedules, weight_average
from rgd.training.trainer import RobustTrainer, make_distributed_step

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@gin.configurable(denylist=["schedule"])
def _make_optimizer(schedule, name="sgd", clipnorm=None):
  # SGD with Nesterov momentum 0.9 (RECIPES.md "TRADES training"); weight decay is added to the
  # loss by the trainer, on kernels only. 'adam': the certified recipes (rgd/certified; LiResNet
  # and l_inf-dist Net train with Adam, LiResNet with gradient clipping at norm 3).
  if name == "adam":
    return keras.optimizers.Adam(learning_rate=schedule, clipnorm=clipnorm)
  if name != "sgd":
    raise ValueError(f"_make_optimizer.name={name!r}: expected 'sgd' or 'adam'")
  return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True,
                              clipnorm=clipnorm)


@gin.configurable(denylist=["model_dir", "strategy"])
def train_and_evaluate(model_dir, strategy, dataset=gin.REQUIRED, num_classes=None,
                       batch_size=1024, num_epochs=400, epoch_size=50_000, num_steps=None,
                       generated_pattern=None, mixing_ratio=0.3, augment=True,
                       batch_augmentation=None, weight_decay=5e-4, ema_decay=0.995,
                       num_validation=datasets.NUM_VALIDATION, eval_every=1000, eval_batch_size=256,
                       checkpoint_every=500, keep_checkpoints=3, log_every=50,
                       image_summary_every=1000, precision="float32", jit_compile=False,
                       seed=0, data_dir=None,
                       generated_label_smoothing=datasets.GENERATED_LABEL_SMOOTHING,
                       nan_policy="stop"):
  """Trains and returns the final logs (dict of floats).

  Lengths are in CIFAR-10-equivalent epochs of `epoch_size` examples (seed 001 counts 400 of
  50k images at batch 1024, about 19.5k steps) unless `num_steps` is given.
  `generated_pattern` is a glob of TFRecord shards (rgd.data.tfrecord); with it each batch holds
  round(mixing_ratio * batch_size) real examples (seed 001: 0.3), their labels smoothed by
  `generated_label_smoothing` (0 for DeepAugment copies, whose labels are the real ones).
  `data_dir` is tfds' data directory (default ~/tensorflow_datasets).
  `nan_policy`: on a step with a non-finite loss or gradient, 'stop' (exit status 3, nothing of
  that state saved) or 'skip_step' (that update is not applied; rgd.training.skip_step).
  """
  if nan_policy not in ("stop", "skip_step"):
    raise ValueError(f"train_and_evaluate.nan_policy={nan_policy!r}: expected 'stop' or "
                     "'skip_step'")
  if precision not in PRECISIONS:
    raise ValueError(f"Unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
  keras.mixed_precision.set_global_policy(PRECISIONS[precision])
  # Seeds Python, numpy and TF: the initial weights are a function of `seed`. Everything random
  # later (augmentation, attack starts) uses stateless ops keyed by the step.
  keras.utils.set_random_seed(seed)
  chief = strategy_lib.is_chief(strategy)
  fileio.makedirs(model_dir)
  if chief:  # an export killed before its rename left a `.tmp-*` file
    fileio.remove_stale_temporaries(model_dir)

  # Data.
  num_classes = datasets.num_classes_of(dataset, num_classes)
  train_split = "train" if num_validation else "train_full"
  images, labels = datasets.load_split(dataset, train_split, num_classes, num_validation, data_dir)
  num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
  if generated_pattern:  # missing, empty, truncated or mis-shaped shards: DataError now
    shard_check.check_generated_shards(generated_pattern, images.shape[1:])
  batch_augment_fn = None
  if batch_augmentation:
    batch_augment_fn = augment_lib.make_batch_augment(batch_augmentation)
  train_ds = datasets.make_train_dataset(
      images, labels, num_classes, batch_size, num_replicas=strategy.num_replicas_in_sync,
      num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
      generated_pattern=generated_pattern, mixing_ratio=mixing_ratio, seed=seed,
      augment=augment, batch_augment_fn=batch_augment_fn,
      generated_label_smoothing=generated_label_smoothing)
  iterator = iter(train_ds)
  total_steps = int(num_steps or math.ceil(num_epochs * (epoch_size or len(images)) / batch_size))
  steps_per_epoch = (epoch_size or len(images)) / batch_size
  logging.info("Training %d steps at global batch %d (%d per replica) on %d replica(s) of %s, "
               "precision %s; %d real training images%s. Model directory %s.", total_steps,
               batch_size, batch_size // strategy.num_replicas_in_sync,
               strategy.num_replicas_in_sync, type(strategy).__name__, precision, len(images),
               f", generated data {generated_pattern} (mixing ratio {mixing_ratio})"
               if generated_pattern else "", model_dir)

  # Models, optimizer, objective: created in the strategy's scope (Model Garden pattern).
  objective = objectives.Objective()
  with strategy.scope():
    network = models.get_model(num_classes=num_classes, input_shape=images.shape[1:])
    avg_network = models.get_model(num_classes=num_classes, input_shape=images.shape[1:])
    avg_network.set_weights(network.get_weights())
    schedule = schedules.learning_rate_schedule(batch_size, total_steps, steps_per_epoch)
    optimizer = _make_optimizer(schedule)
    optimizer.build(network.trainable_variables)
    trainer = RobustTrainer(network, avg_network, objective, batch_size, weight_decay, seed,
                            skip_nonfinite=nan_policy == "skip_step")
    trainer.compile(optimizer=optimizer)
    objective.bind(network, optimizer.iterations, total_steps)
    ema = weight_average.WeightAverage(network, avg_network, ema_decay)
    # Validation score of model.keras: robust accuracy, or clean accuracy without an attack.
    best_score = tf.Variable(-1.0, trainable=False, name="best_validation_score")

  manager = checkpointing.TrainingCheckpoints(
      strategy, os.path.join(model_dir, "checkpoints"), keep_checkpoints, iterator,
      dict(network=network, avg_network=avg_network, optimizer=optimizer,
           best_score=best_score), separate_input_state=num_pipelines > 1)
  if manager.restore():
    logging.info("Resumed from %s at step %d.", manager.latest_checkpoint,
                 int(optimizer.iterations.numpy()))

  distributed_step = make_distributed_step(strategy, trainer, ema, jit_compile)
  # What the exports were trained for: rgd.evaluate --model_dir defaults to it.
  run_info = dict(dataset=dataset, num_classes=num_classes, objective=objective.kind,
                  norm=objective.norm, eps=objective.eps, data_dir=data_dir)

  validation = None
  if num_validation and eval_every:
    val_images, val_labels = datasets.load_split(dataset, "validation", num_classes, num_validation,
                                             data_dir)
    if objective.certified is not None:  # certified accuracy instead of PGD-40 (seed 004)
      validation = certified_validation.make_validator(avg_network, objective.eps, val_images, val_labels,
                                     eval_batch_size)
    else:
      validation = _make_validator(strategy, avg_network, objective, val_images, val_labels,
                                   eval_batch_size, seed)

  writers = {}
  if chief:
    writers = {k: tf.summary.create_file_writer(os.path.join(model_dir, k))
               for k in ("train", "validation")}
  preempt = checkpointing.PreemptionFlag()
  step = int(optimizer.iterations.numpy())
  sums, t0, step0, start = {}, time.time(), step, time.time()
  logs = {}
  try:
    while step < total_steps:
      try:
        element = next(iterator)
      except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        if generated_pattern:  # a corrupt or mis-shaped record: name its shard
          shard_check.raise_for_read_error(e, generated_pattern, images.shape[1:],
                                           num_pipelines, pipeline_id)
        raise
      batch = strategy_lib.distribute_stacked(strategy, element)
      out = {k: float(v) for k, v in distributed_step(batch).items()}
      step += 1
      if nan_policy == "skip_step":
        out["skipped_steps"] = out.pop("skipped")
        if out["skipped_steps"]:
          logging.warning("step %d: non-finite loss or gradients; update skipped "
                          "(nan_policy='skip_step').", step)
          out = {"skipped_steps": 1.0}  # its NaN loss stays out of the logged means
      _check_finite(out, step, manager)
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + v
      if step == step0 + 1 and chief:
        _write_operative_config(model_dir, writers["train"], step)
      if step % log_every == 0 or step == total_steps:
        logs = _log_train(sums, step, total_steps, t0, step0, start, float(schedule(step - 1)),
                          writers.get("train"))
        sums, t0, step0 = {}, time.time(), step
      if validation and (step % eval_every == 0 or step == total_steps):
        clean, robust = validation(step)
        robust_name = getattr(validation, "robust_name", "robust_pgd40")
        logging.info("step %d validation: clean %.4f, %s %.4f", step, clean, robust_name, robust)
        if "validation" in writers:
          with writers["validation"].as_default(step=step):
            tf.summary.scalar("accuracy/clean", clean)
            tf.summary.scalar(f"accuracy/{robust_name}", robust)
        logs.update(val_clean_accuracy=clean, val_robust_accuracy=robust)
        # The best checkpoint is the most robust one; without an attack, the most accurate.
        score = robust if objective.kind != "standard" else clean
        if score > float(best_score.numpy()):
          best_score.assign(score)
          if chief:
            _export(model_dir, "model", avg_network, step,
                    dict(run_info, clean_accuracy=clean, robust_accuracy=robust))
      if chief and image_summary_every and step % image_summary_every == 0:
        _image_summary(writers["train"], network, objective, images[:8], labels[:8], step,
                       seed)
      if step % checkpoint_every == 0 or step == total_steps or preempt.requested:
        manager.save(checkpoint_number=step)
      if preempt.requested:
        logging.warning("Checkpointed at step %d after SIGTERM; exiting.", step)
        return logs
  finally:
    preempt.restore()
    for w in writers.values():
      w.flush()

  if chief:
    _export(model_dir, "last", avg_network, step, run_info)
    if not validation:
      _export(model_dir, "model", avg_network, step, run_info)
  return logs


def _check_finite(out, step, manager):
  """Stops at the first step whose loss parts or gradients are not finite, before this state
  can be checkpointed or exported (the values are the ones fetched for logging anyway)."""
  bad = [k for k, v in out.items() if not math.isfinite(v)]
  if out.get("nonfinite_gradients"):
    bad.append("gradients")
  if bad:
    raise NonFiniteError(
        f"step {step}: non-finite {', '.join(bad)}; stopped without checkpointing or exporting "
        f"this state. Last good checkpoint: {manager.latest_checkpoint or 'none'} (re-running "
        "resumes from it; lower the learning rate or check the data first).")


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


def _log_train(sums, step, total_steps, t0, step0, start, lr, writer):
  n = max(sums.get("count", 1.0), 1.0)
  elapsed = time.time() - t0
  img_per_s = n / max(elapsed, 1e-9)
  logs = {"loss": sums.get("total", 0.0) / n, "ce": sums.get("ce", 0.0) / n,
          "learning_rate": lr, "images_per_second": img_per_s}
  for k in ("kl", "hinge"):
    if k in sums:
      logs[k] = sums[k] / n
  if "skipped_steps" in sums:  # nan_policy='skip_step': how many of this interval's steps
    logs["skipped_steps"] = sums["skipped_steps"]
  for k in ("clean_correct", "adv_correct"):
    if k in sums:
      logs[k.replace("correct", "accuracy")] = sums[k] / n
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


def _make_validator(strategy, avg_network, objective, images, labels, batch_size, seed):
  """PGD-40 (Adam, margin loss; RECIPES.md "Validation") and clean accuracy of the averaged
  model on the held-out images."""
  batch_size = min(batch_size, int(math.ceil(len(images) / strategy.num_replicas_in_sync)) *
                   strategy.num_replicas_in_sync)
  batch_size -= batch_size % strategy.num_replicas_in_sync
  dataset = datasets.make_eval_dataset(images, labels, batch_size)
  attack = pgd.pgd40_adam_margin(objective.norm, objective.eps if objective.kind != "standard"
                                 else 8. / 255)
  model_fn = lambda x: avg_network(x, training=False)

  def replica_fn(batch, index):
    ctx = tf.distribute.get_replica_context()
    x, y, mask = batch["image"], batch["label"], tf.cast(batch["mask"], tf.float32)
    clean_ok = tf.logical_not(losses.misclassified(model_fn(x), y))
    x_adv = attack(model_fn, losses.margin_loss, x, y,
                   tf.stack([seed + tf.cast(ctx.replica_id_in_sync_group, tf.int32), index]))
    adv_ok = tf.logical_not(losses.misclassified(model_fn(x_adv), y))
    return (tf.reduce_sum(tf.cast(clean_ok, tf.float32) * mask),
            tf.reduce_sum(tf.cast(tf.logical_and(clean_ok, adv_ok), tf.float32) * mask))

  @tf.function
  def eval_step(batch, index):
    out = strategy.run(replica_fn, args=(batch, index))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in out]

  def run(step):
    clean = robust = 0.0
    for i, batch in enumerate(dataset):
      stacked = strategy_lib.stack_for_replicas(strategy, batch)
      c, r = eval_step(strategy_lib.distribute_stacked(strategy, stacked),
                       tf.constant(i, tf.int32))
      clean += float(c)
      robust += float(r)
    return clean / len(images), robust / len(images)
  return run


def _image_summary(writer, network, objective, images, labels, step, seed):
  """Clean vs adversarial training inputs (and their amplified difference) in TensorBoard."""
  if objective.attack is None:
    return
  x = datasets.to_float(images)
  labels = tf.one_hot(labels, network.output_shape[-1])
  x_adv = objective.adversarial_examples(lambda z: network(z, training=False), x, labels,
                                         tf.constant([seed, step], tf.int32))
  diff = tf.clip_by_value(0.5 + 10.0 * (x_adv - x), 0.0, 1.0)
  with writer.as_default(step=step):
    grid = visualize.image_grid(tf.stack([x, x_adv, diff]))  # rows: clean, adversarial, diff
    tf.summary.image("clean_adversarial_difference", grid)
