"""One code path for TPU, one or several GPUs, several workers, or the CPU.

`--tpu=ADDR|local` gives TPUStrategy; `TF_CONFIG` with several workers gives
MultiWorkerMirroredStrategy; several local GPUs give MirroredStrategy; otherwise the default
strategy. The training step is written for one replica (Model Garden's base_task pattern).
"""
import json
import os
import posixpath

import tensorflow as tf


def get_strategy(tpu=None):
  if tpu:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu == "local" else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
    # RING: gRPC collectives that work everywhere (CPU hosts, loopback tests); NCCL-only AUTO
    # choices buy nothing on the CPU and can hang when a worker has no GPU.
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING))
  if len(tf.config.list_logical_devices("GPU")) > 1:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def local_replicas(strategy):
  try:
    return len(strategy.extended.worker_devices)
  except RuntimeError:  # the default strategy: one replica
    return 1


def input_pipeline(strategy):
  """(number of input pipelines, this worker's id): one pipeline per worker host."""
  num = strategy.num_replicas_in_sync // local_replicas(strategy)
  resolver = getattr(strategy, "cluster_resolver", None)
  task = resolver.task_id if (resolver is not None and num > 1) else 0
  return num, int(task or 0)


def is_chief(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
    return True
  return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and
                                                     resolver.task_id == 0)


def distribute_stacked(strategy, stacked):
  """Hands slice r of a host batch stacked as [R, ...] to local replica r."""
  offset = input_pipeline(strategy)[1] * local_replicas(strategy)
  return strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.nest.map_structure(lambda t: t[ctx.replica_id_in_sync_group - offset],
                                        stacked))


def stack_for_replicas(strategy, batch):
  """[B, ...] -> [R, B/R, ...] for distribute_stacked."""
  r = local_replicas(strategy)
  return tf.nest.map_structure(
      lambda t: tf.reshape(t, tf.concat([[r, tf.shape(t)[0] // r], tf.shape(t)[1:]], 0)), batch)


def worker_id(strategy):
  """This worker's task id (0 on one worker, TPU or the default strategy)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
    return 0
  return int(resolver.task_id or 0)


def checkpoint_dir(strategy, directory):
  """Where this worker writes checkpoints of the variables.

  MultiWorkerMirroredStrategy needs every worker to take part in a save (the values are
  gathered with collectives), but only the chief's copy is kept: the others write to their own
  temporary directory, deleted after each save. This is TF's multi-worker rule (the Keras
  "Multi-worker training with Keras" guide, `write_filepath`/`_get_temp_dir`; Keras'
  BackupAndRestore does the same).
  """
  if is_chief(strategy):
    return directory
  return posixpath.join(directory, f".worker_{worker_id(strategy)}-tmp")
