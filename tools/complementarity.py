r"""Complementarity and coverage of a generated set (seed 001 App. D, Algorithm 1).

  python tools/complementarity.py --dataset=cifar10 --generated=OUT/generated-*.tfrecord \
      --labeler=LABELER/model.keras --output=report.json

N train images (class balanced), N test images and N generated images (class balanced when
labelled) go through a feature extractor; a 100-d PCA fitted on the real features; nearest
neighbours give c_train, c_test, c_self (ideal 1/3 each) and v_train, v_test (unique neighbours
/ N). The paper uses N = 10k and Inception's pooled features; --extractor picks:
  inception_v3  Keras' InceptionV3 with local weights (--inception_weights, or the standard file
                in ~/.keras/models/); images are resized to 299 x 299
  labeler       the input of the last Dense layer of --labeler (the pseudo-labeller)
  auto          inception_v3 when its weights are on disk, else labeler
The report (stdout and --output) names the extractor used: numbers from different extractors
are not comparable with each other or with the paper's Table 1.
"""
import json

from absl import app
from absl import flags
from absl import logging

from rgd import cli

flags.DEFINE_string("dataset", "cifar10", "Real data: a tfds name or npz:DIR.")
flags.DEFINE_string("generated", None, "Generated set: .npz/.npy/folder (see "
                    "tools/make_tfrecords.py) or a glob of TFRecord shards.")
flags.DEFINE_integer("num_samples", 10_000, "N: images from each of train, test, generated "
                     "(seed 001: 10k).")
flags.DEFINE_enum("extractor", "auto", ["auto", "inception_v3", "labeler"], "Feature "
                  "extractor.")
flags.DEFINE_string("labeler", None, "Keras classifier for --extractor=labeler.")
flags.DEFINE_string("inception_weights", None, "InceptionV3 no-top weights (.h5); default: "
                    "~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5.")
flags.DEFINE_integer("pca_dim", 100, "PCA components (seed 001: 100).")
flags.DEFINE_integer("num_classes", None, "Classes (default: from --dataset).")
flags.DEFINE_integer("batch_size", 256, "Images per feature batch.")
flags.DEFINE_integer("seed", 0, "Seed of the samples.")
flags.DEFINE_string("output", None, "Also write the report here (JSON).")

FLAGS = flags.FLAGS


def _extractor():
  from rgd.datagen import complementarity as comp
  return comp.choose_extractor(FLAGS.extractor, FLAGS.labeler, FLAGS.inception_weights)


def main(argv):
  del argv
  if not FLAGS.generated:
    raise app.UsageError("--generated is required")
  import numpy as np
  from rgd.data import datasets
  from rgd.runtime import fileio
  from rgd.datagen import complementarity as comp
  extractor, info = _extractor()
  logging.info("Feature extractor: %s", info["extractor"])
  k = datasets.num_classes_of(FLAGS.dataset, FLAGS.num_classes)
  n = FLAGS.num_samples
  x_train, y_train = datasets.load_split(FLAGS.dataset, "train_full")
  idx = comp.balanced_sample(y_train, n, k, FLAGS.seed)
  train = (x_train[idx], y_train[idx])
  del x_train
  x_test, y_test = datasets.load_split(FLAGS.dataset, "test")
  idx = comp.balanced_sample(None, min(n, len(x_test)), k, FLAGS.seed + 1, len(x_test))
  test = (x_test[idx], y_test[idx])
  generated = comp.read_generated(FLAGS.generated, n, k, FLAGS.seed + 2)
  result = comp.measure(train, test, generated, extractor, FLAGS.pca_dim, FLAGS.batch_size)
  report = dict(result, **info, dataset=FLAGS.dataset, generated=FLAGS.generated)
  report = {key: (float(v) if isinstance(v, np.floating) else v) for key, v in report.items()}
  print(json.dumps(report, indent=1))
  if FLAGS.output:
    fileio.atomic_write_json(FLAGS.output, report)


if __name__ == "__main__":
  cli.run(main, "complementarity.py")
