"""Training a class-conditional EDM generator: the loop behind `python -m rgd.train_generator`
(the entry point's docstring describes the run and its outputs).

The optimisation follows NVlabs/edm `train.py` and `training/training_loop.py`:
  * Adam (beta 0.9, 0.999, eps 1e-8), lr 10e-4 ramped up linearly over the first
    `lr_rampup_mimg` (10) million images: lr_t = lr * min(t * B / 10M, 1) (training_loop: `g['lr']
    = lr * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)`);
  * gradients with NaN/Inf replaced by 0 / +-1e5 (training_loop: `torch.nan_to_num`);
  * EMA with a half-life of `ema_halflife_mimg` (0.5) million images, ramped up to
    `ema_rampup_ratio` (0.05) of the images seen: beta_t = 0.5 ** (B / min(0.5M, 0.05 t B))
    (training_loop: `ema_beta`);
  * batch 512, 200M images (CIFAR-10, `train.py` --batch, --duration);
  * the loss summed over pixels, summed over the batch / batch size (training_loop.py);
  * EDM's augmentation pipeline with p = `augment_p` (0.12, train.py --augment) before the noise
    (EDMLoss), its 9 labels fed to the network's map_augment (rgd.edm.augment_pipe).

The loop is rgd's one skeleton (rgd.runtime.loop: checkpoints with the fallback past a damaged
one, SIGTERM, operative config, TensorBoard, progress); `GeneratorTask` supplies EDM's step, the
per-class sample grids and the generator export written with every checkpoint. The noise of a
step is keyed by (seed, step) and drawn for the global batch, and the input iterator and the
dropout RNG states are checkpointed, so a resumed run continues exactly as an uninterrupted one.
This module must not import rgd.train: gin files that import it are also read by
`python -m rgd.train`.
"""
import math

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from rgd.runtime import loop as skeleton, strategy as strategy_lib
from rgd.data import datasets
from rgd.runtime import weight_average
from rgd.augment import visualize
from rgd.edm import augment_pipe, denoiser, sampler, store, unet


class RampUpLearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """lr * min(step * batch / rampup_images, 1): EDM's linear ramp-up, counted in images."""

  def __init__(self, learning_rate, batch_size, rampup_images):
    self.learning_rate, self.batch_size = float(learning_rate), int(batch_size)
    self.rampup_images = float(rampup_images)

  def __call__(self, step):
    images = tf.cast(step, tf.float32) * self.batch_size
    return self.learning_rate * tf.minimum(images / max(self.rampup_images, 1e-8), 1.0)

  def get_config(self):
    return dict(learning_rate=self.learning_rate, batch_size=self.batch_size,
                rampup_images=self.rampup_images)


def ema_beta(step, batch_size, halflife_images, rampup_ratio):
  """EDM's EMA decay after step `step` (0-based): the images seen before it are step * B."""
  halflife = tf.constant(float(halflife_images), tf.float32)
  if rampup_ratio is not None:
    halflife = tf.minimum(halflife, tf.cast(step, tf.float32) * batch_size * rampup_ratio)
  return tf.pow(0.5, batch_size / tf.maximum(halflife, 1e-8))


class EDMWeightAverage(weight_average.WeightAverage):
  """rgd's EMA of the weights (same variables and pairing) with EDM's half-life decay."""

  def __init__(self, model, avg_model, batch_size, halflife_images, rampup_ratio):
    super().__init__(model, avg_model, 0.0)
    self.batch_size, self.halflife_images = batch_size, halflife_images
    self.rampup_ratio = rampup_ratio

  def update(self, step):
    decay = ema_beta(step, self.batch_size, self.halflife_images, self.rampup_ratio)
    for a, w in self.pairs:
      a.assign(decay * a + (1. - decay) * tf.cast(w, a.dtype))
    return decay


def nan_to_num(grad):
  """torch.nan_to_num(g, nan=0, posinf=1e5, neginf=-1e5), as EDM's training loop."""
  grad = tf.where(tf.math.is_nan(grad), tf.zeros_like(grad), grad)
  return tf.clip_by_value(grad, -1e5, 1e5)


def make_train_step(strategy, network, optimizer, ema, global_batch, seed, augment_p=0.0):
  """A tf.function: one EDM step on every replica, then the EMA in cross-replica context.
  `augment_p` > 0 runs EDM's augmentation pipeline (the network needs augment_dim 9)."""
  denoise = denoiser.make_denoiser(network)

  def replica_step(batch):
    ctx = tf.distribute.get_replica_context()
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    images = denoiser.to_model_range(datasets.to_float(batch["image"]))
    labels = tf.cast(batch["label"], tf.float32)
    step_seed = tf.stack([tf.constant(seed, tf.int32), tf.cast(optimizer.iterations, tf.int32)])
    # Stateless per step, drawn for the global batch: a resumed run replays the same
    # augmentations and noise, whatever the number of replicas.
    loss_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
    b = tf.shape(images)[0]
    rows = (replica * b, global_batch)
    augment_labels = None
    if augment_p:   # the pipeline's filters and margins need the static image shape
      images = tf.ensure_shape(images, [None, *network.inputs[0].shape[1:]])
      images, augment_labels = augment_pipe.augment(images, augment_seed, augment_p, rows)
    with tf.GradientTape() as tape:
      per_example = denoiser.edm_loss(denoise, images, labels, loss_seed, rows=rows,
                                      augment_labels=augment_labels)
      # Pixel-summed per-example losses, summed / global batch (training_loop.py: loss.sum()
      # .mul(loss_scaling / batch_gpu_total)); the all-reduce of the replicas' gradients then
      # gives the global mean, as DDP's average of the GPUs' gradients.
      loss = denoiser.step_loss(per_example, global_batch)
    variables = network.trainable_variables
    grads = [nan_to_num(g) for g in tape.gradient(loss, variables)]
    optimizer.apply(grads, variables)
    return {"loss": tf.reduce_sum(per_example), "count": tf.cast(b, tf.float32)}

  @tf.function
  def step(batch):
    out = strategy.run(replica_step, args=(batch,))
    logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}
    logs["ema_decay"] = ema.update(optimizer.iterations - 1)
    return logs
  return step


def class_grid(network, num_classes, per_class, image_shape, seed, num_steps):
  """uint8 [1, H', W', 3] grid of samples of the network: row c holds `per_class` images of
  class c (image seeds 0..per_class-1 in every row, so rows differ only by the label)."""
  denoise = denoiser.make_denoiser(network)
  classes = np.repeat(np.arange(num_classes), per_class)
  seeds = sampler.image_seeds(seed, tf.constant(np.tile(np.arange(per_class), num_classes)))
  x = sampler.heun_sample(denoise, seeds, tf.one_hot(classes, num_classes), image_shape,
                          num_steps=num_steps)
  x = tf.reshape(denoiser.from_model_range(x), [num_classes, per_class] + list(image_shape))
  return visualize.image_grid(x)


@gin.configurable(denylist=["model_dir", "strategy", "images", "labels"])
def train_generator(model_dir, strategy=None, dataset=gin.REQUIRED, num_classes=None,
                    batch_size=512, duration_mimg=200.0, num_steps=None, learning_rate=10e-4,
                    lr_rampup_mimg=10.0, ema_halflife_mimg=0.5, ema_rampup_ratio=0.05,
                    checkpoint_every=2000, keep_checkpoints=3, log_every=100,
                    sample_every=5000, samples_per_class=4, sample_steps=18, seed=0,
                    augment_p=0.12, data_dir=None, images=None, labels=None):
  """Trains F (rgd.edm.unet.edm_unet, sized by gin) and returns the logged mean losses.

  Length: `num_steps`, or `duration_mimg` million images (EDM CIFAR-10: 200). Defaults are EDM's
  CIFAR-10 settings (train.py). `augment_p`: EDM's augmentation probability (train.py --augment
  0.12; 0 turns the pipeline off and builds the network without the augmentation-label input).
  `images`/`labels` (uint8 [N, H, W, 3], int) replace `dataset` (tests).
  """
  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(seed)   # initial weights; everything later is stateless
  if images is None:
    num_classes = datasets.num_classes_of(dataset, num_classes)
    images, labels = datasets.load_split(dataset, "train_full", num_classes, 0, data_dir)
  num_classes = int(num_classes or int(np.max(labels)) + 1)
  total_steps = int(num_steps or math.ceil(duration_mimg * 1e6 / batch_size))
  task = GeneratorTask(model_dir, strategy, images, labels, num_classes, total_steps,
                       batch_size, learning_rate, lr_rampup_mimg, ema_halflife_mimg,
                       ema_rampup_ratio, seed, augment_p,
                       dataset if isinstance(dataset, str) else None,
                       (sample_every, samples_per_class, sample_steps))
  logging.info("Training an EDM generator (%.2fM parameters) on %d images of %s, %d classes: "
               "%d steps at batch %d on %d replica(s). Model directory %s.",
               task.network.count_params() / 1e6, len(images), dataset, num_classes,
               total_steps, batch_size, strategy.num_replicas_in_sync, model_dir)
  cadence = skeleton.Cadence(log_every=log_every, checkpoint_every=checkpoint_every,
                             keep_checkpoints=keep_checkpoints)
  # No NaN policy: the step replaces non-finite gradients itself (nan_to_num, as EDM).
  result = skeleton.run(task, model_dir, strategy, cadence)
  return [logs["loss"] for logs in result.history]


class GeneratorTask(skeleton.Task):
  """EDM's part of the loop: the network, its EMA, Adam and the dropout RNG states, the step,
  the per-class sample grids in TensorBoard and the generator export (rgd.edm.store)."""

  per_step = ("ema_decay",)

  def __init__(self, model_dir, strategy, images, labels, num_classes, total_steps, batch_size,
               learning_rate, lr_rampup_mimg, ema_halflife_mimg, ema_rampup_ratio, seed,
               augment_p, dataset_name, sampling):
    self.model_dir, self.strategy, self.total_steps = model_dir, strategy, total_steps
    self.num_classes, self.image_shape, self.seed = num_classes, tuple(images.shape[1:]), seed
    self.sample_every, self.samples_per_class, self.sample_steps = sampling
    num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
    # No pad-crop-flip: EDM trains on the images as they are (its --xflip is off for CIFAR-10).
    self.iterator = iter(datasets.make_train_dataset(
        images, labels, num_classes, batch_size, num_replicas=strategy.num_replicas_in_sync,
        num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id, seed=seed,
        augment=False))
    self.separate_input_state = num_pipelines > 1
    self.kwargs = store.unet_kwargs(images.shape[1:], num_classes)
    self.kwargs["augment_dim"] = augment_pipe.NUM_LABELS if augment_p else 0  # train.py
    with strategy.scope():
      self.network = store.build(self.kwargs)
      self.avg_network = store.build(self.kwargs)
      self.avg_network.set_weights(self.network.get_weights())
      self.optimizer = keras.optimizers.Adam(
          RampUpLearningRate(learning_rate, batch_size, lr_rampup_mimg * 1e6),
          beta_1=0.9, beta_2=0.999, epsilon=1e-8)
      self.optimizer.build(self.network.trainable_variables)
      ema = EDMWeightAverage(self.network, self.avg_network, batch_size,
                             ema_halflife_mimg * 1e6, ema_rampup_ratio)
    self._train_step = make_train_step(strategy, self.network, self.optimizer, ema, batch_size,
                                       seed, augment_p)
    self.info = dict(dataset=dataset_name, num_classes=num_classes,
                     image_shape=list(images.shape[1:]), sigma_data=denoiser.SIGMA_DATA)

  def checkpoint_objects(self):
    return dict(network=self.network, avg_network=self.avg_network, optimizer=self.optimizer,
                dropout_states=unet.seed_states(self.network))

  def current_step(self):
    return int(self.optimizer.iterations.numpy())

  def step(self):
    return self._train_step(strategy_lib.distribute_stacked(self.strategy, next(self.iterator)))

  def interval_logs(self, step, last):
    del step, last
    return dict(learning_rate=float(self.optimizer.learning_rate))  # that of the next step

  def after_step(self, step, context):
    writer = context.writers.get("train")
    if writer is not None and self.sample_every and (step % self.sample_every == 0 or
                                                     step == self.total_steps):
      with writer.as_default(step=step):
        tf.summary.image("samples_per_class_ema", class_grid(
            self.avg_network, self.num_classes, self.samples_per_class, self.image_shape,
            self.seed, self.sample_steps))
    return {}

  def on_checkpoint(self, step):
    store.save(self.model_dir, self.avg_network, self.kwargs, dict(self.info, step=step))
