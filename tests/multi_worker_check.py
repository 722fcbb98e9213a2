"""One worker of a two-process MultiWorkerMirroredStrategy run (tests/test_multi_worker.py).

  python tests/multi_worker_check.py TASK PORT0,PORT1 MODEL_DIR DATA_DIR GENERATED_PATTERN OUT

Sets TF_CONFIG for 127.0.0.1 (loopback only) before TensorFlow starts, trains gin/debug.gin
through rgd.training.loop.train_and_evaluate, and writes OUT.npz (final weights) and OUT.json (the real
count in each of this worker's first batches, and the strategy's view of the cluster).
`RGD_TEST_DIE_AFTER_CHECKPOINT=N` makes this worker exit hard (os._exit, no cleanup) right after
writing checkpoint N: a worker killed mid-run. `RGD_TEST_PAUSE_AFTER_STEP=N` makes it write
OUT.ready after its N-th training step and wait there until its SIGTERM handler has run, so the
test's SIGTERM lands at a known step.
"""
import json
import os
import sys
import threading
import time

# This checkout's rgd, not an installed one (the script runs from tests/).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
task, ports, model_dir, data_dir, generated, out = sys.argv[1:7]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
    "task": {"type": "worker", "index": int(task)}})

from absl import logging  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rgd.runtime import checkpointing, preemption, strategy as strategy_lib  # noqa: E402
from rgd.data import datasets
from rgd import cli
from rgd.training import loop

BATCH, STEPS, MIXING = 8, 6, 0.25


def main():
  logging.set_verbosity(logging.INFO)  # the test reads "Resumed from ..." in the log
  die_after = int(os.environ.get("RGD_TEST_DIE_AFTER_CHECKPOINT", "0"))
  save = checkpointing.TrainingCheckpoints.save

  def save_and_record(self, checkpoint_number):
    save(self, checkpoint_number)
    # This worker's weights at each checkpoint (the last one is the final state).
    ckpt = self._checkpoint  # pylint: disable=protected-access
    # Keys say whether a weight is trainable: BatchNorm's moving statistics are each worker's
    # own (computed from its local batches; only the chief's are saved and exported).
    variables = ckpt.network.weights + ckpt.avg_network.weights
    np.savez(out + ".npz", **{f"w{i:03d}_{'t' if v.trainable else 'n'}": v.numpy()
                              for i, v in enumerate(variables)})
    if checkpoint_number == die_after:
      os._exit(17)
  checkpointing.TrainingCheckpoints.save = save_and_record
  _pause_after_step(int(os.environ.get("RGD_TEST_PAUSE_AFTER_STEP", "0")))

  strategy = strategy_lib.get_strategy()
  num_pipelines, pipeline_id = strategy_lib.input_pipeline(strategy)
  cli.parse_gin(["gin/debug.gin"], [
      f"DATASET='npz:{data_dir}'", f"BATCH_SIZE={BATCH}",
      f"train_and_evaluate.num_steps={STEPS}", "train_and_evaluate.num_validation=0",
      "train_and_evaluate.image_summary_every=0", "train_and_evaluate.checkpoint_every=2",
      f"train_and_evaluate.generated_pattern='{generated}'",
      f"train_and_evaluate.mixing_ratio={MIXING}", "get_model.width=4"])
  loop.train_and_evaluate(model_dir, strategy)

  # The input this worker fed, rebuilt with the same arguments as rgd.train.
  images, labels = datasets.load_split(f"npz:{data_dir}", "train_full", 10, 0)
  ds = datasets.make_train_dataset(images, labels, 10, BATCH, strategy.num_replicas_in_sync,
                               num_pipelines, pipeline_id, generated, MIXING)
  real = [int(tf.reduce_sum(tf.cast(b["is_real"], tf.int32))) for b in ds.take(STEPS)]
  sizes = [int(b["label"].shape[0] * b["label"].shape[1]) for b in ds.take(1)]
  with open(out + ".json", "w") as f:
    json.dump({"real_per_batch": real, "worker_batch": sizes[0],
               "num_replicas": strategy.num_replicas_in_sync,
               "pipelines": [num_pipelines, pipeline_id],
               "chief": strategy_lib.is_chief(strategy)}, f)
  return 0


def _pause_after_step(pause_after):
  """After training step `pause_after` of this process: OUT.ready, then wait for SIGTERM."""
  if not pause_after:
    return
  received = threading.Event()
  handle = preemption.PreemptionFlag._handle  # pylint: disable=protected-access

  def handle_and_record(self, signum, frame):
    handle(self, signum, frame)
    received.set()
  preemption.PreemptionFlag._handle = handle_and_record  # pylint: disable=protected-access
  make_step = loop.make_distributed_step

  def make_pausing_step(*args, **kwargs):
    step_fn, calls = make_step(*args, **kwargs), [0]

    def step(batch):
      result = {k: v.numpy() for k, v in step_fn(batch).items()}
      calls[0] += 1
      if calls[0] == pause_after:
        open(out + ".ready", "w").close()  # pylint: disable=consider-using-with
        deadline = time.time() + 60
        while not received.is_set() and time.time() < deadline:
          time.sleep(0.02)  # the main thread: Python runs the signal handler between sleeps
      return result
    return step
  loop.make_distributed_step = make_pausing_step


if __name__ == "__main__":
  sys.exit(main())
