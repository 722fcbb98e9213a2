"""One worker of the "2 workers x 1 replica == 1 process x 2 replicas" check
(tests/test_multi_worker.py): two TRADES steps of distributed_check.py's model on its global
batch of 8, this worker feeding half TASK; prints the trainable weights' checksum to OUT.npz.

  python tests/multi_worker_step_check.py TASK PORT0,PORT1 OUT
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
task, ports, out = sys.argv[1:4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
    "task": {"type": "worker", "index": int(task)}})

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top
import tensorflow as tf  # noqa: E402

from rgd.runtime import strategy as strategy_lib  # noqa: E402

import distributed_check  # noqa: E402  (configures 2 logical CPUs; MWMS uses one per worker)

strategy = strategy_lib.get_strategy()
assert strategy_lib.local_replicas(strategy) == 1, strategy.extended.worker_devices


def main():
  batch = {"image": tf.random.stateless_uniform([8, 8, 8, 3], [0, 1]),
           "label": tf.one_hot(tf.range(8) % 3, 3)}
  # This worker's half, as the one local replica's batch [1, 4, ...].
  half = tf.nest.map_structure(lambda t: t[4 * int(task):4 * int(task) + 4][None], batch)
  weights, logs = distributed_check.run(strategy, batch, stacked=half)
  np.savez(out, *weights)
  print(f"loss {logs['total']:.6f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
