#!/usr/bin/env python
"""Cross-checks rgd's network and TRADES step against an independent PyTorch implementation.

  python tools/crosscheck_torch.py --model=wrn-10-2 --batch_size=16
  python tools/crosscheck_torch.py --model=wrn-10-1 --seed_bug=kl_direction   # must FAIL

Developer tool: needs `pip install torch` (CPU is enough); rgd does not depend on torch.
It builds the Keras model, gives its BN scales/offsets/statistics and head random values (so that
no check passes because a weight is zero or one), copies it into tools/torch_reference.TorchTwin
and checks:
  1. logits in inference mode and with batch statistics agree (max abs diff <= --logit_tol);
  2. `--steps` full TRADES steps of rgd.training.trainer.RobustTrainer (SGD Nesterov, weight decay on
     kernels) against tools/torch_reference.trades_step on the same batch and the same attack
     noise (rgd's stateless start), for both BN modes (Objective.batch_stats_attack True/False):
     adversarial examples, loss, every gradient, every updated weight and BN moving statistic.
Prints the largest differences and exits 1 if any exceeds its tolerance. `--seed_bug=NAME` plants
a known mistake in the torch side (tools/torch_reference.BUGS) to show that the check finds it.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from rgd.runtime import seeds  # noqa: E402
from rgd import cli, models  # noqa: E402
from rgd.training import objectives
from rgd.training.trainer import RobustTrainer  # noqa: E402
import torch_reference  # noqa: E402

# Tolerances for float32 on CPU (the two frameworks sum in different orders). Gradients and
# updates are compared relative to the largest entry of each tensor.
TOLERANCES = dict(logits=1e-4, loss=1e-5, grad=1e-4, weights=1e-6, stats=1e-6,
                  adv_pixels=0.05, adv_kl=0.05)


def randomize(model, seed=0):
  """Random BN scales/offsets/moving statistics and a random head (Haiku-like 1/sqrt(fan_in)),
  so that the comparison exercises every term."""
  rng = np.random.RandomState(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.moving_mean.shape[0]
      layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
      if layer.scale:
        layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
      if layer.center:
        layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
    elif isinstance(layer, keras.layers.Dense):
      k = layer.kernel.shape
      layer.kernel.assign(rng.normal(0, 1 / np.sqrt(k[0]), k).astype(np.float32))
      layer.bias.assign(rng.normal(0, 0.1, k[1]).astype(np.float32))


def build(name, seed):
  keras.utils.set_random_seed(seed)
  net = models.get_model(name, num_classes=10)
  randomize(net, seed)
  return net


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def check_logits(net, x, bugs=()):
  twin = torch_reference.TorchTwin(net, bugs)
  out = {}
  with torch.no_grad():
    out["eval"] = float(np.max(np.abs(
        net(x, training=False).numpy() - twin(torch.tensor(x.numpy()), bn="eval").numpy())))
    saved = [v.numpy() for v in net.non_trainable_weights]
    keras_batch = net(x, training=True).numpy()
    for v, s in zip(net.non_trainable_weights, saved):
      v.assign(s)
    out["batch"] = float(np.max(np.abs(
        keras_batch - twin(torch.tensor(x.numpy()), bn="batch").numpy())))
  return out


def check_step(net, x, y, batch_stats_attack, steps=2, lr=0.1, weight_decay=5e-4,
               attack_steps=10, bugs=()):
  """`steps` TRADES steps in rgd and in torch from the same weights; the largest differences."""
  keras_net = keras.models.clone_model(net)
  keras_net.set_weights(net.get_weights())
  twin = torch_reference.TorchTwin(keras_net, bugs)
  objective = objectives.Objective(attack_steps=attack_steps, batch_stats_attack=batch_stats_attack)
  trainer = RobustTrainer(keras_net, objective, global_batch_size=len(x),
                          weight_decay=weight_decay, seed=3)
  trainer.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, nesterov=True))
  trainer.optimizer.build(keras_net.trainable_variables)
  captured = {}
  apply = trainer.optimizer.apply

  def capture(grads, variables):
    captured["grads"] = {v.path: g.numpy() for g, v in zip(grads, variables)}
    return apply(grads, variables)
  trainer.optimizer.apply = capture
  opt = torch_reference.NesterovSGD(twin, lr)
  worst = dict(loss=0.0, grad=0.0, adv_pixels=0.0, adv_kl=0.0, weights=0.0, stats=0.0)
  where = {}
  tx, ty = torch.tensor(x.numpy()), torch.tensor(y.numpy())

  def note(kind, value, name):
    if value >= worst[kind]:
      worst[kind], where[kind] = value, name

  for step in range(steps):
    # rgd's attack start: the "attack" stream of the step (RobustTrainer.attack_start,
    # rgd.runtime.seeds).
    seed = seeds.key(trainer.seed, "attack", step)
    noise = objective.attack.initialize_fn(tf.zeros_like(x), seed)
    # rgd's x_adv for this step, from the same network functions the step uses.
    attack_fn, _, _ = trainer.network_fns()
    saved = [v.numpy() for v in keras_net.non_trainable_weights]
    tf_adv = objective.adversarial_examples(attack_fn, x, y, seed, (0, len(x))).numpy()
    for v, s in zip(keras_net.non_trainable_weights, saved):
      v.assign(s)
    decay = float(trainer.weight_decay_loss())  # of the weights the step starts from
    logs = trainer.train_step({"image": x, "label": y})
    tf_loss = float(logs["total"]) / len(x) + decay
    # The attack alone, from the same noise. Its first step follows the gradient of a KL that
    # is O(1e-6) at a 1e-3 start, so float32 rounding flips the sign of some pixels' steps in
    # either framework: pixels may differ; the KL reached must agree.
    attack_bn = "batch" if batch_stats_attack else "eval"
    t_adv = torch_reference.trades_attack(twin, tx, torch.tensor(noise.numpy()), attack_bn,
                                          attack_steps, bugs=bugs)
    with torch.no_grad():
      clean = twin(tx, bn=attack_bn)
      kls = [float(torch_reference.kl_div(clean, twin(a, bn=attack_bn)).mean())
             for a in (torch.tensor(tf_adv), t_adv)]
    note("adv_pixels", float(np.mean(np.abs(tf_adv - t_adv.numpy()) > 1e-6)), f"step {step}")
    note("adv_kl", abs(kls[0] - kls[1]) / max(kls[1], 1e-12), f"step {step} KL rgd "
         f"{kls[0]:.4g}, torch {kls[1]:.4g}")
    # The update on rgd's x_adv, so that it is compared exactly.
    t_loss, _, t_grads = torch_reference.trades_step(
        twin, opt, tx, ty, None, weight_decay=weight_decay,
        batch_stats_attack=batch_stats_attack, steps=attack_steps, x_adv=torch.tensor(tf_adv))
    note("loss", abs(tf_loss - t_loss) / max(abs(t_loss), 1e-12), f"step {step}")
    for path, g in captured["grads"].items():
      note("grad", _rel(g, t_grads[twin.key(path)].numpy()), f"step {step} {path}")
    for v in keras_net.trainable_variables:
      note("weights", float(np.max(np.abs(v.numpy() - twin.params[twin.key(v.path)].detach()
                                          .numpy()))), f"step {step} {v.path}")
    stats = twin.moving_statistics()
    for v in keras_net.non_trainable_variables:
      if v.path in stats:
        note("stats", float(np.max(np.abs(v.numpy() - stats[v.path].numpy()))),
             f"step {step} {v.path}")
  return worst, where


def run(model="wrn-10-1", batch_size=8, steps=2, attack_steps=10, seed=0, bugs=(), lr=0.1,
        stream=sys.stdout):
  """Runs every check; returns (ok, {check: value}). Prints a table to `stream`."""
  net = build(model, seed)
  x = tf.random.stateless_uniform([batch_size, 32, 32, 3], [seed, 1])
  y = tf.one_hot(tf.random.stateless_uniform([batch_size], [seed, 2], 0, 10, tf.int32), 10)
  results, failures = {}, []

  def record(name, value, tol, where=""):
    results[name] = value
    ok = value <= tol
    if not ok:
      failures.append(name)
    print(f"{name:<34} {value:10.3g}  (tol {tol:.0e})  {'ok' if ok else 'FAIL'}  {where}",
          file=stream)

  logits = check_logits(net, x, bugs)
  record("logits, moving statistics", logits["eval"], TOLERANCES["logits"])
  record("logits, batch statistics", logits["batch"], TOLERANCES["logits"])
  for bsa in (True, False):
    worst, where = check_step(net, x, y, bsa, steps, lr, attack_steps=attack_steps, bugs=bugs)
    mode = "DeepMind BN" if bsa else "Zhang BN"
    record(f"{mode}: x_adv pixels differing", worst["adv_pixels"], TOLERANCES["adv_pixels"])
    record(f"{mode}: KL reached by attack, rel.", worst["adv_kl"], TOLERANCES["adv_kl"],
           where.get("adv_kl", ""))
    record(f"{mode}: loss, rel.", worst["loss"], TOLERANCES["loss"], where.get("loss", ""))
    record(f"{mode}: gradient, rel. to max", worst["grad"], TOLERANCES["grad"],
           where.get("grad", ""))
    record(f"{mode}: updated weights, abs.", worst["weights"], TOLERANCES["weights"],
           where.get("weights", ""))
    record(f"{mode}: BN moving stats, abs.", worst["stats"], TOLERANCES["stats"],
           where.get("stats", ""))
  print(("PASS" if not failures else "FAIL: " + ", ".join(failures)), file=stream)
  return not failures, results


def main(argv):
  p = argparse.ArgumentParser(prog="crosscheck_torch.py", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="wrn-10-1", help="rgd model name (models.get_model)")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--steps", type=int, default=2, help="TRADES steps (2: momentum is used)")
  p.add_argument("--attack_steps", type=int, default=10)
  p.add_argument("--lr", type=float, default=0.1)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seed_bug", default="none", choices=torch_reference.BUGS,
                 help="plant a known bug in the torch side; the check must then FAIL")
  args = p.parse_args(argv)
  torch.manual_seed(args.seed)
  bugs = () if args.seed_bug == "none" else (args.seed_bug,)
  print(f"model {args.model}, batch {args.batch_size}, {args.steps} TRADES-{args.attack_steps} "
        f"steps, torch {torch.__version__}, seeded bug: {args.seed_bug}")
  ok, _ = run(args.model, args.batch_size, args.steps, args.attack_steps, args.seed, bugs,
              args.lr)
  return 0 if ok else 1


if __name__ == "__main__":
  cli.run(main, "crosscheck_torch.py", absl_flags=False)
