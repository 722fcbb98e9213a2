"""Generated training data: read, generate, pseudo-label, filter, write, measure.

Seed 001 (Gowal et al. 2021) adds images from generative models to adversarial training. The
path from images to a training set, one module per step:
  sources        read generated images (.npz, .npy, PNG/JPEG folders) in batches or by index,
                 without loading 1M+ images into memory
  gaussian       the class-conditional Gaussian generator of seed 001 Sec. 3.2
  gaussian_stream  the same Gaussian sampled inside the training input (GENERATED='gaussian')
  labeling       pseudo-labels from a non-robust classifier; top-k per class filtering
  writer         sharded, atomic, restartable TFRecord writing (schema: rgd.data.tfrecord)
  pipeline       the job of tools/make_tfrecords.py: label -> select -> write -> metadata.json
  chunks         the same inputs listed once and read as chunks of rows through tf.io.gfile
  beam_pipeline  the same job on Apache Beam (--runner=...): many workers, same records
  complementarity  seed 001 App. D Algorithm 1: complementarity and coverage of a set; the
                 feature extractors
  fid            the Frechet distance (FID) of two image sets in an extractor's features
  inception      the 2015-12-05 Inception graph of published FIDs, read from its GraphDef
The workflow end to end is in docs/generated_data.md.
"""
