#!/usr/bin/env python
r"""Writes DeepAugment-processed copies of a training set as TFRecords (rgd/corruptions/
deepaugment.py), to be mixed into training like generated data.

    # The published EDSR-baseline x4, converted by tools/convert_corruption_net.py:
    python tools/deepaugment.py --network=edsr_baseline_x4 --weights=/weights/edsr_x4.npz \
        --dataset=cifar10 --num_copies=10 --output_dir=/data/deepaugment_edsr_10x
    # rgd's own CIFAR-10 EDSR (rgd.train_corruption_net), named by its gin file:
    python tools/deepaugment.py --corruption_gin=gin/edsr.gin --weights=/runs/edsr/weights.npz \
        --dataset=cifar10 --num_copies=10 --output_dir=/data/deepaugment_edsr_cifar_10x
    python -m rgd.train --gin_file=gin/preact_resnet50_ada_augmix.gin --model_dir=/runs/ada \
        --gin_bindings="DEEPAUGMENT='/data/deepaugment_edsr_10x/deepaugment-*.tfrecord'"

--network names a published network (edsr_baseline_x4, deepaugment_cae; their default sizes);
without it --corruption_gin names rgd's own (train_corruption_net.network / network_kwargs).
--weights are the network's weights (npz).
Re-running the same command resumes: finished shards are kept.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import gin  # noqa: E402

from rgd import cli  # noqa: E402
from rgd.data import datasets  # noqa: E402
from rgd.corruptions import deepaugment, networks  # noqa: E402
import rgd.corruptions.training  # noqa: E402,F401  (registers the configurable)

FLAGS = flags.FLAGS
flags.DEFINE_enum("network", None, ["edsr_baseline_x4", "deepaugment_cae"], "A published "
                  "network (converted weights); overrides --corruption_gin.")
flags.DEFINE_string("corruption_gin", "gin/edsr.gin", "Gin file of rgd's corruption network.")
flags.DEFINE_string("weights", None, "Its weights (npz).")
flags.DEFINE_string("dataset", "cifar10", "tfds name or npz:DIR.")
flags.DEFINE_integer("num_copies", 1, "Processed copies (seed 003's '(10x)': 10).")
flags.DEFINE_integer("seed", 0, "Seed of the distortions.")
flags.DEFINE_integer("examples_per_shard", 10_000, "Records per shard.")
flags.DEFINE_string("output_dir", None, "Where the shards go.")


def main(argv):
  del argv
  if not FLAGS.output_dir or not FLAGS.weights:
    raise app.UsageError("--output_dir and --weights are required")
  if FLAGS.network:
    net = networks.get_network(FLAGS.network)
  else:
    cli.parse_gin([FLAGS.corruption_gin], [])  # a missing or bad file: ConfigError naming it
    name = gin.query_parameter("train_corruption_net.network")
    kwargs = gin.query_parameter("train_corruption_net.network_kwargs") or {}
    net = networks.get_network(name, **kwargs)
  params = networks.load_params(FLAGS.weights, net)
  images, labels = datasets.load_split(FLAGS.dataset, "train")
  names = deepaugment.write_deepaugment(FLAGS.output_dir, net, params, images, labels,
                                        FLAGS.num_copies, FLAGS.seed, FLAGS.examples_per_shard)
  print(f"{len(names)} shards, {FLAGS.num_copies} x {len(images)} images -> {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, "deepaugment.py")
