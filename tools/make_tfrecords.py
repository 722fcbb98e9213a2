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
  # (docs/beam.md):
  python tools/make_tfrecords.py --input='gs://b/samples/*.npy' ... --runner=DirectRunner \
      --beam_pipeline_options="--direct_num_workers=2 --direct_running_mode=multi_processing"

Inputs (--input, the generator `files:PATH`): an .npz with `image` uint8 [N, H, W, 3] (and
optional `label`), .npy files (a file, a glob or a folder), a folder of PNG/JPEG images, or a
glob of .npz files; local or gs://. The generators are chosen by name in rgd.datagen.generators;
the job is rgd.datagen.pipeline.make_tfrecords. Without --labeler the input's own
labels are kept (the Gaussian's class, or the .npz `label`). Train on the result with
`generated_pattern` = OUT/generated-*.tfrecord (see docs/generated_data.md). An interrupted run
is finished by running the same command again.
"""
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

from rgd import cli
from rgd.datagen import generators, labeling, pipeline

flags.DEFINE_string("input", None, "Generated images: .npz, .npy file/glob/folder, or a folder "
                    "of PNG/JPEG files.")
flags.DEFINE_string("generator", None, "Generate the images instead of --input, by name "
                    "(rgd/datagen/generators.py): 'gaussian' = class-conditional Gaussian fitted "
                    "on --dataset (seed 001 Sec. 3.2); 'edm:DIR' = the EDM trained by "
                    "rgd.train_generator in DIR; 'adm:PATH' = guided-diffusion's ImageNet-64 ADM "
                    "(64x64_diffusion.pt) on --classes; 'files:PATH' = --input=PATH.")
flags.DEFINE_string("classes", "tinyimagenet", "For --generator=adm:PATH: 'tinyimagenet' (its "
                    "200 classes), 'imagenet', or comma-separated ImageNet indices or wnids.")
flags.DEFINE_integer("num_images", 1_000_000, "Images to sample for --generator=edm:DIR or adm:PATH "
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


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.output_dir:
    raise app.UsageError("--output_dir is required")
  if (f.input is None) == (f.generator is None):
    raise app.UsageError("give exactly one of --input and --generator")
  _run(f)


def _run(f):
  meta = pipeline.make_tfrecords(
      f.output_dir,
      generators.make(
          f.generator or f"files:{f.input}", dataset=f.dataset, fit_split=f.fit_split,
          num_validation=f.num_validation,
          num_per_class=f.num_per_class, generator_seed=f.generator_seed,
          num_classes=f.num_classes, num_images=f.num_images, chunk_size=f.chunk_size,
          batch_per_device=f.batch_per_device, num_steps=f.num_steps, s_churn=f.s_churn,
          guidance=f.guidance, debug_delay_s=f.debug_shard_delay_s, classes=f.classes,
          # adm: only the sampler flags given on the command line replace its ImageNet-64 ones
          sampler_overrides={k: f[k].value for k in ("num_steps", "s_churn") if f[k].present}),
      labeler=labeling.Labeler.load(f.labeler, from_logits=f.labeler_outputs == "logits")
      if f.labeler else None,
      keep_per_class=f.keep_per_class or None, num_classes=f.num_classes,
      examples_per_shard=f.examples_per_shard, batch_size=f.batch_size, seed=f.seed,
      keep_cache=f.keep_cache, argv=sys.argv, shard_delay_s=f.debug_shard_delay_s,
      runner=f.runner, beam_options=shlex.split(f.beam_pipeline_options))
  if meta is None:
    print(f"submitted to {f.runner}; {f.output_dir}/metadata.json appears when it is done")
    return
  logging.info("Wrote %d examples in %d shards to %s (per class: %s)", meta["num_examples"],
               len(meta["shards"]), meta["pattern"], meta["counts_per_class"])
  print(f"{meta['num_examples']} examples, per class {meta['counts_per_class']}: "
        f"{meta['pattern']}")


if __name__ == "__main__":
  cli.run(main, "make_tfrecords.py")
