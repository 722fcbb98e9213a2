"""Attack suites run as cascades: each stage attacks only the points still robust after the
stages before it, and the result is the pointwise worst case (AutoAttack's
`run_standard_evaluation`).

Suites (gin-configurable factories, `get_suite(name, norm, eps)`):
  * `aa+mt`      AA+MT of Gowal et al. 2020 / seeds 000 and 001: APGD-CE (5 x 100) ->
                 APGD-DLR (5 x 100) -> MultiTargeted (10 x 200, margin loss).
  * `autoattack` AutoAttack "standard": APGD-CE (1 x 100) -> APGD-T (9 targets) -> FAB-T
                 (9 targets) -> Square (5000 queries).
  * `pgd40`      the validation attack of DeepMind's experiment (Adam, margin loss, 40 steps).

    stages = get_suite("aa+mt", "linf", 8 / 255)
    result = run_cascade(stages, model, images, labels, batch_size=500, seed=0)

`compile_attack` wraps an attack in a `tf.function` (optionally XLA) and `distribute_attack`
maps it over the replicas of a `tf.distribute` strategy.
"""
import time

import gin
import numpy as np
import tensorflow as tf

from rgd.attacks import losses, pgd
from rgd.attacks.apgd import APGD, APGDTargeted, logits_of, per_example_norm
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square

# Tolerance of the final eps-ball check: float32 rounding of x0 + eps.
BALL_TOLERANCE = 1e-5


class WithLoss:
  """Adapts a `PGD`-style attack (model_fn, loss_fn, x, labels, seed) to the evaluation
  interface (model_fn, x, labels, seed)."""

  def __init__(self, name, attack, loss_fn, norm, eps):
    self.name, self.attack, self.loss_fn = name, attack, loss_fn
    self.norm, self.eps = norm, float(eps)

  def __call__(self, model_fn, x, labels, seed=(0, 0)):
    return self.attack(model_fn, self.loss_fn, x, labels, seed)


@gin.configurable(denylist=["norm", "eps"])
def aa_mt_suite(norm, eps, apgd_restarts=5, apgd_steps=100, mt_restarts=10, mt_steps=200,
                mt_targets=9):
  """AA+MT (seed 001 App. A "Evaluation"; RECIPES.md "Evaluation")."""
  return [APGD(norm, eps, "ce", apgd_steps, apgd_restarts),
          APGD(norm, eps, "dlr", apgd_steps, apgd_restarts),
          MultiTargeted(norm, eps, mt_steps, mt_restarts, mt_targets)]


@gin.configurable(denylist=["norm", "eps"])
def autoattack_suite(norm, eps, apgd_steps=100, apgd_restarts=1, num_target_classes=9,
                     fab_steps=100, square_queries=5000, p_init=0.8):
  """AutoAttack version='standard' (Croce & Hein 2020; autoattack.py `set_version`)."""
  return [APGD(norm, eps, "ce", apgd_steps, apgd_restarts),
          APGDTargeted(norm, eps, apgd_steps, 1, num_target_classes),
          FABTargeted(norm, eps, fab_steps, 1, num_target_classes),
          Square(norm, eps, square_queries, 1, p_init)]


@gin.configurable(denylist=["norm", "eps"])
def pgd40_suite(norm, eps):
  return [WithLoss("pgd40", pgd.pgd40_adam_margin(norm, eps), losses.margin_loss, norm, eps)]


SUITES = {"aa+mt": aa_mt_suite, "autoattack": autoattack_suite, "pgd40": pgd40_suite}


def get_suite(name, norm, eps):
  if name not in SUITES:
    raise ValueError(f"Unknown suite {name!r}; expected one of {sorted(SUITES)}")
  return SUITES[name](norm, eps)


def compile_attack(attack, model_fn, jit_compile=False):
  """`fn(x, labels, seed) -> x_adv` as one `tf.function` (XLA with `jit_compile`)."""
  return tf.function(lambda x, labels, seed: attack(model_fn, x, labels, seed),
                     jit_compile=jit_compile, reduce_retracing=True)


def distribute_attack(strategy, attack_fn):
  """Maps `attack_fn(x, labels, seed)` over the replicas of `strategy`: the batch is split
  evenly (its size must be divisible by the number of replicas), replica r uses the seed
  folded with r, and the adversarial examples come back concatenated in batch order."""
  num = strategy.num_replicas_in_sync

  def fn(x, labels, seed):
    if x.shape[0] % num:
      raise ValueError(f"batch of {x.shape[0]} is not divisible by {num} replicas")
    per = x.shape[0] // num
    seed = tf.cast(seed, tf.int32)

    def value_fn(ctx):
      r = ctx.replica_id_in_sync_group
      sl = slice(r * per, (r + 1) * per)
      return x[sl], labels[sl], tf.random.experimental.stateless_fold_in(seed, r)

    args = strategy.experimental_distribute_values_from_function(value_fn)
    out = strategy.run(attack_fn, args=args)
    return tf.concat(strategy.experimental_local_results(out), axis=0)
  return fn


def _in_ball(x_adv, x0, norm, eps):
  dist = per_example_norm(tf.constant(x_adv - x0), norm).numpy()
  return (dist <= eps * (1 + BALL_TOLERANCE) + BALL_TOLERANCE) & (x_adv >= 0).reshape(
      len(x_adv), -1).all(1) & (x_adv <= 1).reshape(len(x_adv), -1).all(1)


def _batches(indices, batch_size):
  for start in range(0, len(indices), batch_size):
    yield indices[start:start + batch_size]


def _pad(a, size):
  """Pads the leading axis to `size` by repeating the first row (static shapes for XLA)."""
  if len(a) == size:
    return a
  return np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)])


def padded_size(n, batch_size, jit_compile):
  """Rows a batch of `n` points is run with. Without XLA exactly `n`: padding a stage's last
  batch to `batch_size` cost up to 20x on the few points a late stage has left (issue 9).
  Under XLA, whose programs have static shapes, the next power of two (capped at
  `batch_size`): a handful of compiled shapes instead of one per remainder."""
  if not jit_compile:
    return n
  return min(1 << max(n - 1, 0).bit_length(), batch_size)


def predict(model_fn, images, batch_size):
  """Float32 logits of all images, in batches."""
  fn = tf.function(lambda x: logits_of(model_fn, x), reduce_retracing=True)
  out = [fn(tf.constant(images[i])).numpy()
         for i in _batches(np.arange(len(images)), batch_size)]
  return np.concatenate(out)


def run_cascade(stages, model_fn, images, labels, batch_size, seed=0, strategy=None,
                jit_compile=False, on_batch=None):
  """Runs `stages` as a cascade on float32 `images` [N, H, W, C] in [0, 1].

  Returns a dict: clean_correct, robust (final flags), robust_after (list of flags per stage),
  x_adv (float32, the clean image where no attack succeeded), stage_seconds,
  attacked (points attacked per stage), and logits of the clean images.
  `on_batch(stage_index, stage_name, batches_done, batches_total)` reports progress (with
  batches_done = 0 when a stage starts).
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  clean_logits = predict(model_fn, images, batch_size)
  robust = clean_logits.argmax(1) == labels
  clean_correct = robust.copy()
  x_adv = images.copy()
  robust_after, stage_seconds, attacked = [], [], []
  check_fn = tf.function(lambda x, y: losses.misclassified(logits_of(model_fn, x), y),
                         reduce_retracing=True)
  for s, attack in enumerate(stages):
    fn = compile_attack(attack, model_fn, jit_compile)
    if strategy is not None:
      fn = distribute_attack(strategy, fn)
    todo = np.flatnonzero(robust)
    attacked.append(int(len(todo)))
    total = -(-len(todo) // batch_size)
    start = time.monotonic()
    if on_batch is not None:
      on_batch(s, attack.name, 0, total)
    for b, idx in enumerate(_batches(todo, batch_size)):
      rows = padded_size(len(idx), batch_size, jit_compile)
      if strategy is not None:  # the replicas split the batch evenly
        rows += -rows % strategy.num_replicas_in_sync
      x0, y = _pad(images[idx], rows), _pad(labels[idx], rows)
      batch_seed = tf.constant([seed, s * 1_000_003 + b], tf.int32)
      adv = fn(tf.constant(x0), tf.constant(y), batch_seed)
      fooled = check_fn(adv, tf.constant(y)).numpy()[:len(idx)]
      adv = adv.numpy()[:len(idx)]
      ok = _in_ball(adv, images[idx], attack.norm, attack.eps)
      if not ok.all():
        raise RuntimeError(f"{attack.name} returned {int((~ok).sum())} point(s) outside the "
                           f"{attack.norm} ball of radius {attack.eps} or outside [0, 1]")
      robust[idx[fooled]] = False
      x_adv[idx[fooled]] = adv[fooled]
      if on_batch is not None:
        on_batch(s, attack.name, b + 1, total)
    stage_seconds.append(time.monotonic() - start)
    robust_after.append(robust.copy())
  return dict(clean_correct=clean_correct, robust=robust, robust_after=robust_after,
              x_adv=x_adv, stage_seconds=stage_seconds, attacked=attacked,
              clean_logits=clean_logits)
