"""The one training-loop skeleton of rgd: `run(task, model_dir, strategy, cadence)`.

The classifier (rgd.training.loop), the EDM generator (rgd.edm.training) and the corruption
networks (rgd.corruptions.training) each supply a `Task`: what is checkpointed, one step, the
scalars of a logging interval beyond the means, and hooks (validation, sample grids, exports).
Everything else is done here once, for all three:

  * the checkpoints in MODEL_DIR/checkpoints, restored at the start past a damaged newest one
    (rgd.runtime.checkpointing), written every `checkpoint_every` steps, at the end and on
    SIGTERM;
  * SIGTERM: a checkpoint of the step reached, then a clean return; under several workers the
    notice is agreed after every step so that all stop at the same one (rgd.runtime.preemption);
  * the NaN policy, applied to the fetched values of every step (rgd.runtime.nan_policy);
  * MODEL_DIR/operative_config.gin, written once by the chief after the first step (also after a
    resume), and as text in TensorBoard;
  * every `log_every` steps: the means over the interval's examples of what the step summed, the
    task's scalars, images per second, a progress line with the ETA (rgd.runtime.progress) and
    the same values as TensorBoard scalars in MODEL_DIR/train.

A step returns float-convertible values: sums over its examples, the divisor `count` (the number
of examples) and the per-step values the task names in `per_step` (not summed: the last is
logged). The sum `total` is logged as `loss`, a `*_correct` sum as `*_accuracy`.
"""
import dataclasses
import time

from absl import logging
import gin
import tensorflow as tf

from rgd.runtime import checkpointing, faults, fileio, preemption, strategy as strategy_lib
from rgd.runtime import metric_names as names
from rgd.runtime.progress import format_duration


@dataclasses.dataclass(frozen=True)
class Cadence:
  """How often the loop logs and checkpoints, and how many checkpoints it keeps."""
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int = 3


@dataclasses.dataclass
class Result:
  """What `run` returns: the last logged values (with the hooks' additions), every logged set in
  order, the step reached and whether SIGTERM stopped the run."""
  logs: dict
  history: list
  step: int
  preempted: bool


class Task:
  """What a trainer supplies to `run`. Subclasses set the attributes and override the methods
  they need; `checkpoint_objects`, `step` and `current_step` are required."""

  total_steps = 0
  iterator = None               # checkpointed with the state (per worker when sharded)
  separate_input_state = False  # one input pipeline per worker (rgd.runtime.checkpointing)
  summaries = ("train",)        # TensorBoard folders the chief writes (MODEL_DIR/<name>)
  per_step = ()                 # fetched values that are not sums over examples

  def checkpoint_objects(self):
    """{name: trackable} of the training state, built in the strategy's scope."""
    raise NotImplementedError

  def step(self):
    """Runs one training step (input included); returns {name: scalar}."""
    raise NotImplementedError

  def current_step(self):
    """The number of steps taken (the optimizer's iterations, restored with the state)."""
    raise NotImplementedError

  def interval_logs(self, step, last):
    """Scalars to log with the interval's means (e.g. the learning rate); `last`: the last
    step's fetched values."""
    del step, last
    return {}

  def after_step(self, step, context):
    """Runs after the step's logging (validation, image summaries); returns values to add to
    the logs. `context` has `writers`, `chief` and `logged` (whether this step logged)."""
    del step, context
    return {}

  def on_checkpoint(self, step):
    """Runs on the chief after every checkpoint (exports kept in step with it)."""
    del step

  def finish(self, step):
    """Runs on the chief when the step budget is spent (not after SIGTERM): final exports."""
    del step


@dataclasses.dataclass
class Context:
  writers: dict
  chief: bool
  logged: bool = False


def run(task, model_dir, strategy, cadence, nan_policy=None):
  """Restores, trains `task` to `task.total_steps` (or until SIGTERM) and returns a `Result`.

  `nan_policy` (rgd.runtime.nan_policy.NanPolicy): decides on each step's fetched values; None
  leaves them to the step (EDM replaces non-finite gradients in the step itself)."""
  chief = strategy_lib.is_chief(strategy)
  fileio.makedirs(model_dir)
  if chief:  # an export killed before its rename left a `.tmp-*` file
    fileio.remove_stale_temporaries(model_dir)
  objects = dict(task.checkpoint_objects())
  if nan_policy is not None:
    with strategy.scope():
      objects.update(nan_policy.checkpoint_objects())
  manager = checkpointing.TrainingCheckpoints(
      strategy, fileio.join(model_dir, "checkpoints"), cadence.keep_checkpoints, task.iterator,
      objects, separate_input_state=task.separate_input_state)
  if manager.restore():
    logging.info("Resumed from %s at step %d.", manager.latest_checkpoint, task.current_step())
  context = Context(writers={}, chief=chief)
  if chief:
    context.writers = {k: tf.summary.create_file_writer(fileio.join(model_dir, k))
                       for k in task.summaries}
  preempt = preemption.for_strategy(strategy)  # SIGTERM on any worker stops all at one step
  total = task.total_steps
  step = step0 = first = task.current_step()
  sums, logs, history = {}, {}, []
  start = t0 = time.time()
  try:
    while step < total:
      fetched = {k: float(v) for k, v in task.step().items()}
      step += 1
      out = fetched
      if nan_policy is not None:
        out = nan_policy.after_step(fetched, step, manager.latest_checkpoint)
        if not out:
          logging.warning("step %d: non-finite loss or gradients; update skipped "
                          "(nan_policy='skip_step', %d in a row).", step, nan_policy.consecutive)
      for k, v in out.items():
        if k not in task.per_step:
          sums[k] = sums.get(k, 0.0) + v
      if step == first + 1 and chief:
        _write_operative_config(model_dir, context.writers.get("train"), step)
      context.logged = step % cadence.log_every == 0 or step == total
      if context.logged:
        logs = interval_logs(sums, fetched, task, step, t0)
        if nan_policy is not None and nan_policy.trainer_skips:
          logs["skipped_steps"] = float(nan_policy.skipped_total)
        _report(logs, step, total, t0, step0, start, context.writers.get("train"))
        history.append(dict(logs))
        sums, t0, step0 = {}, time.time(), step
      logs.update(task.after_step(step, context))
      faults.after_step(step)
      stop = preempt.should_stop()  # once a step: a collective under several workers
      if step % cadence.checkpoint_every == 0 or step == total or stop:
        manager.save(checkpoint_number=step)
        if chief:
          task.on_checkpoint(step)
      if stop:
        logging.warning("Checkpointed at step %d after SIGTERM; exiting.", step)
        return Result(logs, history, step, preempted=True)
  finally:
    preempt.restore()
    for w in context.writers.values():
      w.flush()
  if chief:
    task.finish(step)
  return Result(logs, history, step, preempted=False)


def interval_logs(sums, last, task, step, t0):
  """Means over the interval's examples of every sum the step returned (so a new loss part,
  e.g. AugMix's `jsd`, reaches TensorBoard without touching a loop), the task's scalars, img/s
  and the last per-step values."""
  n = max(sums.get(names.COUNT, 1.0), 1.0)
  logs = {names.LOSS: sums.get(names.TOTAL, 0.0) / n}
  for k, v in sorted(sums.items()):
    if k in (names.COUNT, names.TOTAL):  # the divisor; `total` is logged as `loss` above
      continue
    logs[names.accuracy_name(k)] = v / n
  logs.update(task.interval_logs(step, last))
  logs["images_per_second"] = n / max(time.time() - t0, 1e-9)
  logs.update({k: last[k] for k in task.per_step if k in last})
  return logs


def _report(logs, step, total, t0, step0, start, writer):
  rate = (step - step0) / max(time.time() - t0, 1e-9)
  eta = (total - step) / max(rate, 1e-9)
  logging.info("step %d/%d (%.1f%%) %s | %.0f img/s | elapsed %s | ETA %s", step, total,
               100.0 * step / total,
               " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "images_per_second"),
               logs["images_per_second"], format_duration(time.time() - start),
               format_duration(eta))
  if writer is not None:
    with writer.as_default(step=step):
      for k, v in logs.items():
        tf.summary.scalar(k, v)


def _write_operative_config(model_dir, writer, step):
  config = gin.operative_config_str()
  fileio.atomic_write_text(fileio.join(model_dir, "operative_config.gin"), config)
  if writer is not None:
    with writer.as_default(step=step):
      # Markdown code block keeps gin's layout in TensorBoard's text tab.
      tf.summary.text("operative_config", "```\n" + config + "\n```")
