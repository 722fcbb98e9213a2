"""Generated training data: read, generate, pseudo-label, filter, write, measure.

Seed 001 (Gowal et al. 2021) adds images from generative models to adversarial training. The
path from images to a training set, one module per step:
  formats        the on-disk layouts (.npz, .npy, PNG/JPEG folders) and their header checks
  sources        the one reader of generated images, through tf.io.gfile (local files by
                 os.pread): in batches, by index or in chunks, without loading 1M+ images
  generators     generated images chosen by name: files:PATH, gaussian, edm:DIR
  gaussian       the class-conditional Gaussian generator of seed 001 Sec. 3.2
  gaussian_stream  the same Gaussian sampled inside the training input (GENERATED='gaussian')
  labeling       pseudo-labels from a non-robust classifier; top-k per class filtering
  sample_job     sampling a trained EDM on the local devices, split over workers
  adm_sampling   guided-diffusion's ImageNet-64 ADM sampled on a class subset (TinyImageNet)
  writer         sharded, atomic, restartable TFRecord writing (schema: rgd.data.tfrecord)
  metadata       metadata.json of a finished job, and matching a re-run against it
  pipeline       the labelling job (tools/make_tfrecords.py): label -> select -> write ->
                 metadata.json, in process or on Beam (runner=...)
  beam_pipeline  the job's Beam runner: many workers, the same records
  complementarity  seed 001 App. D Algorithm 1: complementarity and coverage of a set; the
                 feature extractors
  fid            the Frechet distance (FID) of two image sets in an extractor's features
  inception      the 2015-12-05 Inception graph of published FIDs, read from its GraphDef
The workflow end to end is in docs/generated_data.md.
"""
