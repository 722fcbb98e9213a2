#!/usr/bin/env python
"""TF profiler trace of rgd's TRADES step, and its time by op type (developer tool).

  python tools/profile_step.py capture --model=wrn-10-2 --batch_size=128 --logdir=/tmp/prof
  python tools/profile_step.py summarize --logdir=/tmp/prof        # needs `pip install xprof`

`capture` builds the step as `tools/benchmark.py train` does (rgd's defaults: DeepMind's BN
mode, fused BatchNorm, oneDNN on CPU), runs `--warmup` untraced steps, then traces `--steps`
steps with `tf.profiler.experimental` (part of TF; it writes `plugins/profile/*/*.xplane.pb`).
View the trace with TensorBoard's profile plugin or xprof, or print the table with
`summarize`. `summarize` reads the newest trace with xprof's `framework_op_stats` converter and
prints the self time per op type. xprof is not an rgd dependency, and it need not share rgd's
environment: `summarize` does not import TensorFlow, so it reads a local --logdir only (copy
a gs:// trace down first; `capture` writes through TF and takes any path).
"""
import argparse
import collections
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rgd import cli  # noqa: E402  (imports no TensorFlow)
from rgd.errors import ConfigError, DataError  # noqa: E402


def capture(args):
  import rgd  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (before TF)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from rgd import models
  from rgd.runtime import strategy as strategy_lib
  from rgd.runtime import weight_average
  from rgd.training import objectives
  from rgd.training.trainer import RobustTrainer, make_distributed_step
  strategy = strategy_lib.get_strategy()
  with strategy.scope():
    net = models.get_model(args.model, num_classes=10)
    avg = models.get_model(args.model, num_classes=10)
    trainer = RobustTrainer(net, objectives.Objective(attack_steps=args.attack_steps),
                            args.batch_size)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.optimizer.build(net.trainable_variables)
    ema = weight_average.WeightAverage(net, avg, 0.995)
  step = make_distributed_step(strategy, trainer, ema, args.jit)
  r = strategy.num_replicas_in_sync
  batch = strategy_lib.distribute_stacked(strategy, {
      "image": tf.random.stateless_uniform([r, args.batch_size // r, 32, 32, 3], [0, 0]),
      "label": tf.one_hot(tf.reshape(tf.range(args.batch_size) % 10, [r, -1]), 10)})
  for _ in range(args.warmup):
    step(batch)["total"].numpy()
  tf.profiler.experimental.start(args.logdir)
  for _ in range(args.steps):
    step(batch)["total"].numpy()
  tf.profiler.experimental.stop()
  print(f"trace of {args.steps} step(s) written under {args.logdir}/plugins/profile")


def op_type_table(stats, top):
  """Rows (op type, self seconds, share, occurrences) of xprof's framework_op_stats JSON."""
  table = stats[0] if isinstance(stats, list) else stats
  cols = [c["id"] for c in table["cols"]]
  self_us, count = collections.Counter(), collections.Counter()
  for row in table["rows"]:
    v = dict(zip(cols, [c.get("v") if c else None for c in row["c"]]))
    self_us[v["type"]] += v["total_self_time"]
    count[v["type"]] += v["occurrences"]
  total = sum(self_us.values())
  return [(k, t / 1e6, t / total, count[k]) for k, t in self_us.most_common(top)], total / 1e6


def summarize(args):
  try:
    from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("summarize needs `pip install xprof` (not an rgd dependency)")
  # Without TensorFlow there is no gfile here: copy a gs:// trace down first.
  pattern = os.path.join(args.logdir, "plugins/profile/*/*.xplane.pb")
  traces = sorted(glob.glob(pattern))  # local only
  if not traces:
    raise DataError(f"summarize: no *.xplane.pb under {args.logdir}/plugins/profile")
  data, _ = raw_to_tool_data.xspace_to_tool_data([traces[-1]], "framework_op_stats", {})
  rows, total = op_type_table(json.loads(data), args.top)
  print(f"{traces[-1]}: {total:.2f} s of op self time (all threads; IDLE = no op running)")
  for name, seconds, share, n in rows:
    print(f"{name:<36} {seconds:8.3f} s {100 * share:5.1f}%  x{int(n)}")


def main(argv):
  p = argparse.ArgumentParser(prog="profile_step.py", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("capture")
  c.add_argument("--model", default="wrn-10-2")
  c.add_argument("--batch_size", type=int, default=128)
  c.add_argument("--attack_steps", type=int, default=10)
  c.add_argument("--jit", action="store_true")
  c.add_argument("--warmup", type=int, default=2)
  c.add_argument("--steps", type=int, default=1)
  c.add_argument("--logdir", required=True)
  s = sub.add_parser("summarize")
  s.add_argument("--logdir", required=True)
  s.add_argument("--top", type=int, default=15)
  args = p.parse_args(argv)
  (capture if args.command == "capture" else summarize)(args)
  return 0


if __name__ == "__main__":
  cli.run(main, "profile_step.py", absl_flags=False)
