"""The evaluation cascade: runs a suite of attacks (rgd/attacks/suites.py) in order, each stage
attacking only the points still robust after the stages before it; the result is the pointwise
worst case (AutoAttack's `run_standard_evaluation`).

Cost. Each stage AND each run of a stage (restart, target) attacks only the points still
robust: the cascade drives the runs itself (`attack.num_runs`, `attack.run`,
rgd/attacks/protocol.py), gathering the survivors into batches of at most `batch_size` and
scattering the results back, as AutoAttack's restart loops do. Without XLA the batches are not
padded (TF runs any shape); under XLA (`jit_compile=True`) a batch is padded to the smallest of
a few bucket sizes (the powers of two below `batch_size`, and `batch_size`), so at most
~log2(batch_size) + 1 shapes compile per stage; over replicas a batch is padded to a multiple
of their number. Every random draw is keyed by the example's index in the evaluation set
(`common.example_seeds`), so which subset is attacked does not change a point's result.

    stages = suites.get_suite("aa+mt", "linf", 8 / 255)
    result = run_cascade(stages, model_fn, images, labels, batch_size=500, seed=0)

`compile_attack` wraps a whole attack call in a `tf.function` (optionally XLA), for tools and
benchmarks that attack one batch.
"""
import time

from absl import logging
import numpy as np
import tensorflow as tf

from rgd.attacks import common, losses, protocol
from rgd.attacks.common import logits_of
from rgd.attacks.projections import per_example_norm
from rgd.errors import ConfigError, NonFiniteLogitsError
from rgd.runtime import faults

# Tolerance of the final eps-ball check: float32 rounding of x0 + eps.
BALL_TOLERANCE = 1e-5


def compile_attack(attack, model_fn, jit_compile=False):
  """`fn(x, labels, seed) -> x_adv`, the protocol's call of `attack` as one `tf.function` (XLA
  with `jit_compile`, where the restarts run on every row: static shapes;
  protocol.run_until_fooled)."""
  fn = lambda x, labels, seed: protocol.run_until_fooled(attack, model_fn, x, labels, seed,
                                                         subset=not jit_compile)[0]
  return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)


def compile_run(attack, model_fn, jit_compile=False):
  """`fn(r, x, labels, seeds) -> x_adv`: run r of `attack` on the rows given, with the
  examples' own seeds [B, 2], as one `tf.function` (r is a tensor: one trace for all runs)."""
  run = lambda r, x, labels, seeds: attack.run(model_fn, r, common.run_seeds(seeds, r), x,
                                               labels)[0]
  return tf.function(run, jit_compile=jit_compile, reduce_retracing=True)


def _split_over_replicas(strategy, fn, num_batched):
  """Maps `fn(*args)` over the replicas of `strategy`: the first `num_batched` args are split
  evenly along the batch (its size must be divisible by the number of replicas), the others
  are passed whole; the results come back concatenated in batch order."""
  num = strategy.num_replicas_in_sync

  def mapped(*args):
    batched, rest = args[:num_batched], args[num_batched:]
    size = batched[0].shape[0]
    if size % num:
      raise ConfigError(f"batch of {size} is not divisible by {num} replicas")
    per = size // num

    def value_fn(ctx):
      sl = slice(ctx.replica_id_in_sync_group * per, (ctx.replica_id_in_sync_group + 1) * per)
      return tuple(a[sl] for a in batched)

    parts = strategy.experimental_distribute_values_from_function(value_fn)
    out = strategy.run(lambda *p: fn(*p, *rest), args=parts)
    return tf.concat(strategy.experimental_local_results(out), axis=0)
  return mapped


def _in_ball(x_adv, x0, norm, eps):
  dist = per_example_norm(tf.constant(x_adv - x0), norm).numpy()
  return (dist <= eps * (1 + BALL_TOLERANCE) + BALL_TOLERANCE) & (x_adv >= 0).reshape(
      len(x_adv), -1).all(1) & (x_adv <= 1).reshape(len(x_adv), -1).all(1)


def _batches(indices, batch_size):
  for start in range(0, len(indices), batch_size):
    yield indices[start:start + batch_size]


def bucket_sizes(batch_size, multiple=1):
  """The padded batch sizes under XLA: the powers of two below `batch_size`, and `batch_size`,
  each rounded up to a multiple of `multiple` (the number of replicas): XLA programs have
  static shapes, so a handful of compiled shapes instead of one per remainder."""
  sizes, p = {batch_size}, 1
  while p < batch_size:
    sizes.add(p)
    p *= 2
  return sorted({-(-n // multiple) * multiple for n in sizes})


def padded_size(n, batch_size, jit_compile, multiple=1):
  """Rows a batch of `n` points is run with. Without XLA (and one replica) exactly `n`:
  padding a stage's last batch to `batch_size` cost up to 20x on the few points a late stage
  has left. Under XLA the smallest bucket (`bucket_sizes`) that holds n."""
  if not jit_compile and multiple == 1:
    return n
  if not jit_compile:
    return -(-n // multiple) * multiple
  return next(b for b in bucket_sizes(batch_size, multiple) if b >= n)


def _pad(a, size):
  """Pads the leading axis to `size` by repeating the first row (static shapes for XLA)."""
  if len(a) == size:
    return a
  return np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)])


def predict(model_fn, images, batch_size):
  """Float32 logits of all images, in batches."""
  fn = tf.function(lambda x: logits_of(model_fn, x), reduce_retracing=True)
  out = [fn(tf.constant(images[i])).numpy() for i in _batches(np.arange(len(images)),
                                                              batch_size)]
  return np.concatenate(out)


def run_cascade(stages, model_fn, images, labels, batch_size, seed=0, strategy=None,
                jit_compile=False, on_batch=None, state=None):
  """Runs `stages` as a cascade on float32 `images` [N, H, W, C] in [0, 1].

  Returns a dict: clean_correct, robust (final flags), robust_after (list of flags per stage),
  x_adv (float32, the clean image where no attack succeeded), stage_seconds, attacked (points
  attacked per stage), point_runs (sum over the stage's runs of the points each attacked),
  bucket_sizes (the padded batch sizes under XLA, [] without), and the clean logits.
  `on_batch(stage_index, stage_name, batches_done, batches_total)` reports progress (with
  batches_done = 0 when a stage starts; batches_total is the bound of a stage whose runs all
  attack every point, and the last call has batches_done == batches_total).

  Each stage (an attack of rgd/attacks/protocol.py) is run run by run (`num_runs`, `run`) on
  the points still robust.
  `state` (rgd.evaluation.stage_state.StageState): the finished stages are saved after each
  stage, and those saved by an interrupted run are not run again.
  """
  for attack in stages:   # every result is checked against the stage's threat model
    if attack.norm not in protocol.NORMS or attack.eps is None:
      raise ConfigError(f"stage {attack.name!r} has no threat model (norm {attack.norm!r}, eps "
                        f"{attack.eps!r}); give PGD norm= and eps=")
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  clean_logits = predict(model_fn, images, batch_size)
  bad = np.flatnonzero(~np.isfinite(clean_logits).all(1))
  if len(bad):
    raise NonFiniteLogitsError(f"the model returns NaN/Inf logits for {len(bad)} of "
                               f"{len(images)} clean images (first: index {bad[0]})")
  num_classes = clean_logits.shape[1]
  robust = clean_logits.argmax(1) == labels
  clean_correct = robust.copy()
  x_adv = images.copy()
  robust_after, stage_seconds, attacked, point_runs = [], [], [], []
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  # Padding only where shapes must be static (XLA) or split evenly (replicas).
  buckets = bucket_sizes(batch_size, replicas) if jit_compile else []
  check_fn = tf.function(lambda x, y: losses.misclassified(logits_of(model_fn, x), y),
                         reduce_retracing=True)
  saved = state.load(clean_correct) if state is not None else None
  restored = len(saved["robust_after"]) if saved else 0
  if saved:  # an interrupted run's finished stages
    robust_after, x_adv = saved["robust_after"], saved["x_adv"]
    robust = robust_after[-1].copy()
    stage_seconds, attacked, point_runs = (saved["stage_seconds"], saved["attacked"],
                                           saved["point_runs"])
  for s, attack in enumerate(stages):
    if s < len(robust_after):
      logging.info("stage %d/%d %s: restored from %s", s + 1, len(stages), attack.name,
                   state.path)
      continue
    # Per-example seeds keyed by the stage and the example's index in the evaluation set.
    seeds = common.example_seeds(tf.constant([seed, s], tf.int32), len(images)).numpy()
    num_runs = attack.num_runs(num_classes)
    run = compile_run(attack, model_fn, jit_compile)
    fn = lambda r, x, y, sd, run=run: run(tf.constant(r, tf.int32), x, y, sd)
    if strategy is not None:
      fn = _distributed(strategy, fn)
    todo = np.flatnonzero(robust)
    attacked.append(int(len(todo)))
    total = num_runs * -(-len(todo) // batch_size)
    done, runs_points = 0, 0
    start = time.monotonic()
    if on_batch is not None:
      on_batch(s, attack.name, 0, total)
    for r in range(num_runs):
      left = todo[robust[todo]]
      if not len(left):
        break
      runs_points += len(left)
      for idx in _batches(left, batch_size):
        size = padded_size(len(idx), batch_size, jit_compile, replicas)
        x0, y = _pad(images[idx], size), _pad(labels[idx], size)
        adv = fn(r, tf.constant(x0), tf.constant(y), tf.constant(_pad(seeds[idx], size)))
        fooled = check_fn(adv, tf.constant(y)).numpy()[:len(idx)]
        adv = adv.numpy()[:len(idx)]
        ok = _in_ball(adv, images[idx], attack.norm, attack.eps)
        if not ok.all():
          raise RuntimeError(f"{attack.name} returned {int((~ok).sum())} point(s) outside the "
                             f"{attack.norm} ball of radius {attack.eps} or outside [0, 1]")
        robust[idx[fooled]] = False
        x_adv[idx[fooled]] = adv[fooled]
        done += 1
        if on_batch is not None and done < total:
          on_batch(s, attack.name, done, total)
    if on_batch is not None:
      on_batch(s, attack.name, total, total)
    stage_seconds.append(time.monotonic() - start)
    robust_after.append(robust.copy())
    point_runs.append(int(runs_points))
    if state is not None:
      state.save(dict(robust_after=robust_after, x_adv=x_adv, clean_correct=clean_correct,
                      stage_seconds=stage_seconds, attacked=attacked, point_runs=point_runs))
      faults.kill_point(f"eval_stage:{s}")
  return dict(clean_correct=clean_correct, robust=robust, robust_after=robust_after,
              x_adv=x_adv, stage_seconds=stage_seconds, attacked=attacked,
              point_runs=point_runs, bucket_sizes=buckets, clean_logits=clean_logits,
              restored_stages=restored)


def _distributed(strategy, fn):
  """`fn(r, x, labels, seeds)` with x, labels, seeds split over the replicas."""
  split = _split_over_replicas(strategy, lambda x, y, sd, r: fn(r, x, y, sd), 3)
  return lambda r, x, y, sd: split(x, y, sd, r)
