r"""FID of a generated set against the real training set (Heusel et al. 2017).

  python tools/fid.py --dataset=cifar10 --generated='OUT/generated-*.tfrecord' \
      --extractor=inception_2015 --inception_graph=DIR/classify_image_graph_def.pb

FID = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)) of Gaussians fitted to features of
--num_real training images and --num_generated generated ones (EDM's fid.py: 50k generated
images against the statistics of the whole training set; the defaults here). --generated takes
what tools/make_tfrecords.py takes (.npz, .npy file/glob/folder, PNG/JPEG folder) or a glob of
TFRecord shards, sampled uniformly (pseudo-labelled sets are rarely class balanced). The
extractors (rgd.datagen.complementarity.choose_extractor):
  inception_2015  the Inception-v3 graph of 2015-12-05 (classify_image_graph_def.pb of
                  inception-2015-12-05.tgz, --inception_graph), pool_3: the network of published
                  FIDs (TTUR, pytorch-fid, NVlabs/edm), so these FIDs compare with theirs
  inception_v3    Keras' ImageNet InceptionV3 (--inception_weights): another network; its FIDs
                  compare only with FIDs from it
  labeler         the penultimate layer of --labeler; comparable only with the same labeller
  auto            the first of these whose file is on disk
Every line the tool prints or logs about an FID names the extractor and what it compares with.
"""
import json

from absl import app
from absl import flags
from absl import logging

from rgd import cli

flags.DEFINE_string("dataset", "cifar10", "Real data: a tfds name or npz:DIR (its training "
                    "split).")
flags.DEFINE_string("generated", None, "Generated set: .npz/.npy/folder or a glob of "
                    "TFRecord shards.")
flags.DEFINE_integer("num_generated", 50_000, "Generated images (EDM: 50k).")
flags.DEFINE_integer("num_real", 50_000, "Real training images (at most the training set; "
                     "EDM: all 50k of CIFAR-10).")
flags.DEFINE_enum("extractor", "auto", ["auto", "inception_2015", "inception_v3", "labeler"],
                  "Feature extractor.")
flags.DEFINE_string("labeler", None, "Keras classifier for --extractor=labeler.")
flags.DEFINE_string("inception_graph", None, "The 2015-12-05 Inception GraphDef "
                    "(classify_image_graph_def.pb); default: ~/.keras/models/.")
flags.DEFINE_string("inception_weights", None, "InceptionV3 no-top weights (.h5); default: "
                    "~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5.")
flags.DEFINE_integer("num_classes", None, "Classes (default: from --dataset).")
flags.DEFINE_integer("batch_size", 256, "Images per feature batch.")
flags.DEFINE_integer("seed", 0, "Seed of the samples.")
flags.DEFINE_string("output", None, "Also write the report here (JSON).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.generated:
    raise app.UsageError("--generated is required")
  from rgd.data import datasets  # pylint: disable=g-import-not-at-top
  from rgd.runtime import fileio  # pylint: disable=g-import-not-at-top
  from rgd.datagen import complementarity as comp  # pylint: disable=g-import-not-at-top
  from rgd.datagen import fid  # pylint: disable=g-import-not-at-top
  extractor, info = comp.choose_extractor(FLAGS.extractor, FLAGS.labeler,
                                          FLAGS.inception_weights, FLAGS.inception_graph)
  logging.info("Feature extractor: %s; its FIDs compare with %s", info["extractor"],
               info["comparable_with"])
  k = datasets.num_classes_of(FLAGS.dataset, FLAGS.num_classes)
  x_train, y_train = datasets.load_split(FLAGS.dataset, "train_full")
  n_real = min(FLAGS.num_real, len(x_train))
  real = x_train if n_real == len(x_train) else x_train[
      comp.balanced_sample(None, n_real, k, FLAGS.seed, len(x_train))]
  del x_train
  # A uniform sample (not class balanced): FID compares the whole distributions.
  generated, _ = comp.read_generated(FLAGS.generated, FLAGS.num_generated, k, FLAGS.seed + 1,
                                     balanced=False)
  value, sizes = fid.fid_of_images(extractor, real, generated, FLAGS.batch_size)
  report = dict(fid=value, **sizes, **info, dataset=FLAGS.dataset, generated=FLAGS.generated)
  logging.info("FID %.4f [extractor: %s; comparable with %s]", value, info["extractor"],
               info["comparable_with"])
  print(json.dumps(report, indent=1))
  if FLAGS.output:
    fileio.atomic_write_json(FLAGS.output, report)


if __name__ == "__main__":
  cli.run(main, "fid.py")
