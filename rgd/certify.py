r"""Certified (verified-robust) accuracy: `python -m rgd.certify --model_dir=DIR`.

    python -m rgd.certify --model_dir=runs/gloro_l             # L2, eps from DIR/model.json
    python -m rgd.certify --model=any.keras --dataset=npz:DIR --radii=0,36/255,72/255

Loads DIR/model.keras (GloRo/LiResNet or l_inf-dist Net/SortNet; rgd.certified), evaluates it in
float32, certifies every test example with certified Lipschitz bounds (rgd.certified.
certificate) and reports: clean accuracy; certified accuracy at the trained eps and at
--radii; the distribution of certified radii of correct and of wrong predictions (table and
PNG, as seed 004 Fig. 5); and the train/test clean-accuracy gap of seed 004 Sec. 4.3 (on the
first --num_train_examples training images). Writes to --output_dir (default DIR/eval):
`certify_<norm>_<eps>.json`, `.md` (the tables), `.png` (the radius distribution) and
TensorBoard scalars.
"""
import os
import sys

from absl import flags

from rgd import cli
from rgd.certified import certificate
from rgd.errors import ConfigError
from rgd.data import datasets
from rgd.evaluation import certified, per_class, target

FLAGS = flags.FLAGS
cli.define_model_flags()  # --model, --dataset, --split, --eps, --num_examples, --batch_size, ...
flags.DEFINE_list("radii", None, "Further radii, e.g. 0,36/255,72/255.")
flags.DEFINE_enum("linf_bound", "interval", ["interval", "margin"],
                  "l_inf-dist / SortNet certificate: interval bounds with the [0, 1] clip (the "
                  "references') or margin/2.")
flags.DEFINE_integer("num_train_examples", 10000, "Training images for the generalisation gap "
                     "(0: skip).")


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {argv[1:]}")
  cli.parse_gin_or_exit(require_model_dir=False)
  # Flags first: a typo fails before the model and the data are read.
  eps = target.parse_eps(FLAGS.eps) if FLAGS.eps is not None else None
  radii = [target.parse_eps(r, "--radii") if r not in ("0", "0.0") else 0.0
           for r in FLAGS.radii] if FLAGS.radii else None
  model, path, step = target.load_model(FLAGS.model_dir, FLAGS.model)
  with target.naming(path):  # not certifiable: exit 2 naming the file
    norm = certificate.certifiable_norm(model)
  # Dataset and eps default to what the run was trained on (DIR/model.json), as rgd.evaluate.
  run = target.run_defaults(FLAGS.model_dir, FLAGS.model)
  dataset = FLAGS.dataset or run.get("dataset") or target.DEFAULT_TARGET["dataset"]
  images, labels = datasets.load_split(dataset, FLAGS.split, data_dir=run.get("data_dir"))
  if FLAGS.num_examples:
    images, labels = images[:FLAGS.num_examples], labels[:FLAGS.num_examples]
  train_images = train_labels = None
  if FLAGS.num_train_examples:
    train_images, train_labels = datasets.load_split(dataset, "train_full",
                                                 data_dir=run.get("data_dir"))
    train_images = train_images[:FLAGS.num_train_examples]
    train_labels = train_labels[:FLAGS.num_train_examples]
  eps = eps if eps is not None else run.get("eps")
  if eps is None:
    eps = 36 / 255 if norm == "l2" else 8 / 255
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir or os.path.dirname(path), "eval")
  settings = dict(model=path, checkpoint_step=step, dataset=dataset, split=FLAGS.split,
                  command=" ".join(sys.argv))
  names = per_class.class_names(run, dataset, model.output_shape[-1], run.get("data_dir"))
  report = certified.certify_model(model, images, labels, float(eps), radii, train_images,
                                   train_labels, FLAGS.batch_size, output_dir, settings,
                                   FLAGS.linf_bound, class_names=names)
  at = ", ".join(f"{r['radius']:.4g}: {100 * r['certified_accuracy']:.2f}%"
                 for r in report["certified_at"])
  gap = report.get("generalization_gap")
  print(f"clean {100 * report['clean_accuracy']:.2f}% | certified ({report['norm']}, eps "
        f"{report['eps']:.4g}) {100 * report['certified_accuracy']:.2f}% | at radii {at}"
        + (f" | generalization gap {100 * gap:.2f}" if gap is not None else "")
        + f" -> {output_dir}\nweakest classes (certified): "
        + per_class.weakest(report["per_class"], "certified_accuracy"))


if __name__ == "__main__":
  cli.run(main, "rgd.certify")
