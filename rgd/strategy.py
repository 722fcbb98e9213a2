"""One code path for TPU, one or several GPUs, several workers, or the CPU.

`--tpu=ADDR|local` gives TPUStrategy; `TF_CONFIG` with several workers gives
MultiWorkerMirroredStrategy; several local GPUs give MirroredStrategy; otherwise the default
strategy. The training step is written for one replica (Model Garden's base_task pattern).
"""
import json
import os

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
    return tf.distribute.MultiWorkerMirroredStrategy()
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
