r"""Turns generated images into a pseudo-labelled, sharded TFRecord training set.

  # Label a published set with a non-robust classifier, keep the best 100k per class
  # (seed 001 App. D), write shards + metadata.json:
  python tools/make_tfrecords.py --input=samples.npz --labeler=LABELER/model.keras \
      --output_dir=OUT --keep_per_class=100000

  # An EDM trained with rgd.train_generator: 1M images (Heun, 18 steps / 35 evaluations),
  # batched over the local GPUs, split over TF_CONFIG workers (each writes OUT/worker-w-of-W/):
  python tools/make_tfrecords.py --generator=edm:/runs/edm --num_images=1000000 \
      --labeler=LABELER/model.keras --output_dir=OUT

  # No downloaded generator: the class-conditional Gaussian of seed 001 Sec. 3.2, fitted on the
  # real training set, 100k samples per class, labelled by the same classifier:
  python tools/make_tfrecords.py --generator=gaussian --dataset=cifar10 \
      --num_per_class=100000 --labeler=LABELER/model.keras --output_dir=OUT

  # The same job on Apache Beam (pip install -e ".[beam]"): 2 local processes, or a cluster
  # (docs/beam.md); --input may then also be a glob of .npz files:
  python tools/make_tfrecords.py --input='gs://b/samples/*.npy' ... --runner=DirectRunner \
      --beam_pipeline_options="--direct_num_workers=2 --direct_running_mode=multi_processing"

Inputs (--input): an .npz with `image` uint8 [N, H, W, 3] (and optional `label`), .npy files
(a file, a glob or a folder), or a folder of PNG/JPEG images. Without --labeler the input's own
labels are kept (the Gaussian's class, or the .npz `label`). Train on the result with
`generated_pattern` = OUT/generated-*.tfrecord (see docs/generated_data.md). An interrupted run
is finished by running the same command again.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

from rgd.errors import DataError
from rgd.datagen import pipeline

flags.DEFINE_string("input", None, "Generated images: .npz, .npy file/glob/folder, or a folder "
                    "of PNG/JPEG files.")
flags.DEFINE_string("generator", None, "Generate the images instead of --input: "
                    "'gaussian' = class-conditional Gaussian fitted on --dataset (seed 001 "
                    "Sec. 3.2); 'edm:DIR' = the EDM trained by rgd.train_generator in DIR "
                    "(rgd/datagen/sample_job.py).")
flags.DEFINE_integer("num_images", 1_000_000, "Images to sample for --generator=edm:DIR "
                     "(image i is of class i % K).")
flags.DEFINE_integer("num_steps", 18, "EDM sampler steps (18: 35 network evaluations).")
flags.DEFINE_float("s_churn", 0.0, "EDM stochastic churn S_churn (0: deterministic Heun).")
flags.DEFINE_float("guidance", 0.0, "Classifier-free guidance weight for EDM (0: none; needs "
                   "a generator trained with label dropout).")
flags.DEFINE_integer("batch_per_device", 64, "EDM images per local device per step.")
flags.DEFINE_integer("chunk_size", 10_000, "EDM images per restartable chunk.")
flags.DEFINE_string("dataset", "cifar10", "Real training set for --generator: a tfds name or "
                    "npz:DIR.")
flags.DEFINE_enum("fit_split", "train_full", ["train_full", "train"], "Split the Gaussian is "
                  "fitted on: the whole training set (seed 001), or without the "
                  "--num_validation images rgd.train holds out for validation.")
flags.DEFINE_integer("num_validation", 1024, "Images rgd.train holds out for validation "
                     "(train_and_evaluate.num_validation), for --fit_split=train.")
flags.DEFINE_integer("num_per_class", 100_000, "Images per class for --generator "
                     "(seed 001: 100k).")
flags.DEFINE_integer("generator_seed", 0, "Seed of --generator.")
flags.DEFINE_string("labeler", None, "Keras classifier (.keras) giving the pseudo-labels; "
                    "omit to keep the input's labels.")
flags.DEFINE_enum("labeler_outputs", "logits", ["logits", "probabilities"],
                  "What the labeller returns.")
flags.DEFINE_string("output_dir", None, "Where the shards and metadata.json go.")
flags.DEFINE_integer("keep_per_class", 0, "Keep the K most confident images per class "
                     "(0: keep all).")
flags.DEFINE_integer("num_classes", None, "Number of classes (default: the labeller's, or the "
                     "largest input label + 1).")
flags.DEFINE_integer("examples_per_shard", 10_000, "Records per TFRecord shard.")
flags.DEFINE_integer("batch_size", 256, "Images per labeller batch.")
flags.DEFINE_integer("seed", 0, "Seed of the order in which records are written.")
flags.DEFINE_bool("keep_cache", False, "Keep OUT/.work (plan, extracted .npz members, Gaussian "
                  "samples) after success.")
flags.DEFINE_string("runner", None, "Run on Apache Beam with this runner (DirectRunner, "
                    "DataflowRunner, FlinkRunner, SparkRunner); unset: one process, no Beam.")
flags.DEFINE_string("beam_pipeline_options", "", "More Beam pipeline options, as on a Beam "
                    "command line, e.g. \"--project=P --region=R --temp_location=gs://b/tmp\".")
flags.DEFINE_float("debug_shard_delay_s", 0.0, "Testing only: sleep after each shard (and "
                   "each EDM chunk) so that a run can be interrupted.")


def _input_config(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  remote = "://" in path
  info = {"kind": "input", "path": path if remote else os.path.abspath(path)}
  if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
    stat = tf.io.gfile.stat(path)
    info.update(size=stat.length, mtime=int(stat.mtime_nsec // 10**9))
  return info


def _gaussian_opener(dataset, split, num_per_class, seed, num_classes, num_validation):
  def open_source(cache_dir):
    from rgd.data import datasets
    from rgd.runtime import progress
    from rgd.datagen import gaussian, sources
    images, labels = datasets.load_split(dataset, split, num_validation=num_validation)
    k = datasets.num_classes_of(dataset, num_classes)
    logging.info("Fitting a class-conditional Gaussian to %d images of %s", len(images), dataset)
    model = gaussian.ClassConditionalGaussian.fit(images, labels, k)
    del images
    bar = progress.Progress(num_per_class * k, "sampling", "img")
    folder = gaussian.write_samples(model, num_per_class, os.path.join(cache_dir, "gaussian"),
                                    seed=seed, progress=bar)
    bar.close()
    return sources.open_source(folder)
  return open_source


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.output_dir:
    raise app.UsageError("--output_dir is required")
  if (f.input is None) == (f.generator is None):
    raise app.UsageError("give exactly one of --input and --generator")
  try:
    _run(f)
  except DataError as e:  # Bad input: one clear line naming the file, no traceback.
    sys.exit(f"error: {e}")


def _run(f):
  output_dir, keep = f.output_dir, f.keep_per_class
  if f.generator and f.generator.startswith("edm:"):
    from rgd.datagen import sample_job
    worker, num_workers = sample_job.worker_split()
    output_dir = sample_job.worker_output_dir(f.output_dir, worker, num_workers)
    keep = sample_job.worker_keep(keep, worker, num_workers)
    config, opener = sample_job.make_opener(
        f.generator[4:], f.num_images, f.generator_seed, f.chunk_size, f.batch_per_device,
        worker, num_workers, f.debug_shard_delay_s, num_steps=f.num_steps, s_churn=f.s_churn,
        guidance=f.guidance)
  elif f.generator == "gaussian":
    config = {"source": {"kind": "gaussian", "dataset": f.dataset, "split": f.fit_split,
                         "num_per_class": f.num_per_class, "generator_seed": f.generator_seed}}
    if f.fit_split == "train":
      config["source"]["num_validation"] = f.num_validation
    opener = _gaussian_opener(f.dataset, f.fit_split, f.num_per_class, f.generator_seed,
                              f.num_classes, f.num_validation)
  elif f.generator:
    raise app.UsageError(f"--generator={f.generator}: expected 'gaussian' or 'edm:DIR'")
  else:
    from rgd.datagen import sources
    config = {"source": _input_config(f.input)}

    def opener(cache_dir):
      return sources.open_source(f.input, cache_dir)
  if f.runner:
    return _run_beam(f, config)
  labeler = None
  if f.labeler:
    from rgd.datagen import labeling
    labeler = labeling.Labeler.load(f.labeler, from_logits=f.labeler_outputs == "logits")
  meta = pipeline.make_tfrecords(
      output_dir, config, opener, labeler=labeler, keep_per_class=keep or None,
      num_classes=f.num_classes, examples_per_shard=f.examples_per_shard,
      batch_size=f.batch_size, seed=f.seed, keep_cache=f.keep_cache, argv=sys.argv,
      shard_delay_s=f.debug_shard_delay_s)
  logging.info("Wrote %d examples in %d shards to %s (per class: %s)", meta["num_examples"],
               len(meta["shards"]), output_dir, meta["counts_per_class"])
  print(f"{meta['num_examples']} examples, per class {meta['counts_per_class']}: "
        f"{meta['pattern']}")


def _run_beam(f, config):
  import shlex  # pylint: disable=g-import-not-at-top
  from rgd.datagen import beam_pipeline, labeling  # pylint: disable=g-import-not-at-top
  if f.generator:
    raise app.UsageError("--runner needs --input (write --generator's samples first)")
  labeler = f.labeler and labeling.Labeler.load(f.labeler,
                                                from_logits=f.labeler_outputs == "logits")
  meta = beam_pipeline.make_tfrecords(
      f.output_dir, config, f.input, labeler=labeler or None,
      keep_per_class=f.keep_per_class or None, num_classes=f.num_classes,
      examples_per_shard=f.examples_per_shard, batch_size=f.batch_size, seed=f.seed,
      keep_cache=f.keep_cache, argv=sys.argv,
      beam_args=[f"--runner={f.runner}"] + shlex.split(f.beam_pipeline_options))
  if meta is None:
    print(f"submitted to {f.runner}; {f.output_dir}/metadata.json appears when it is done")
  else:
    print(f"{meta['num_examples']} examples, per class {meta['counts_per_class']}: "
          f"{meta['pattern']}")


if __name__ == "__main__":
  app.run(main)
