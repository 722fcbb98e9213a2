"""`GENERATED='gaussian'`: the class-conditional Gaussian of seed 001 Sec. 3.2, sampled on the fly.

Seed 001 fits "a multivariate Gaussian to each set of 5K training images corresponding to each
class" and trains on its samples, labelled by their class, with no filtering (Sec. 3.2, Fig.
3(a): +0.93% robust accuracy on CIFAR-10 with 80% real and 20% Gaussian images per batch, gains
from 50% to 90% real). Sampling inside the input pipeline
instead of writing records first needs no disk and no second step:

  * the fit (rgd.datagen.gaussian, the one implementation) sees exactly the real images the run
    trains on (rgd.train's training split, without its validation images, nor the test set);
  * the sample sequence is the records tool's: element i of the stream is image i of
    `tools/make_tfrecords.py --generator=gaussian --generator_seed=S` fitted on the same images
    (`--dataset=D --fit_split=train --num_validation=V`), with S = `generator_seed(run seed)`
    (rgd.runtime.seeds, stream "gaussian"); the records tool then shuffles the images into
    shards, the stream hands them out in order (image i has class i % K, so batches are class
    balanced);
  * it is stateless: sampling batch j is a pure function of (S, j) (rgd.datagen.gaussian
    `ClassConditionalGaussian.batch`), so the position in the stream is the whole state, and the
    input pipeline's checkpoint (a counter, and the partly used sampling batch) resumes it
    exactly. With several input pipelines, pipeline p samples batches p, p + P, p + 2P, ...

The sampling runs in numpy through `tf.numpy_function` (host CPU, as the records tool does).
tf.data refuses to checkpoint an iterator through a Python function unless told that its state
may be ignored; here the function has no state (the values depend on the batch index only),
which is what makes ignoring it exact.
"""
import tensorflow as tf

from rgd.datagen import gaussian
from rgd.runtime import seeds

PATTERN = "gaussian"   # the value of GENERATED / train_and_evaluate.generated_pattern


def generator_seed(run_seed):
  """The generator seed of a run: `--generator_seed` of the records tool for the same images."""
  return seeds.shuffle_seed(run_seed, PATTERN)


def fit(images, labels, num_classes):
  return gaussian.ClassConditionalGaussian.fit(images, labels, num_classes)


def sample_batches(model, seed, num_pipelines=1, pipeline_id=0, first=0):
  """tf.data of the sampling batches (uint8 images [SAMPLE_BATCH, H, W, C], int64 labels) of
  this pipeline, from its `first`-th on; `seed` is the generator seed."""
  shape = (gaussian.SAMPLE_BATCH,) + model.image_shape

  def draw(j):
    return model.batch(int(j), gaussian.SAMPLE_BATCH, seed)

  def sample(j):
    images, labels = tf.numpy_function(draw, [j], (tf.uint8, tf.int64), stateful=False)
    return tf.ensure_shape(images, shape), tf.ensure_shape(labels, shape[:1])

  # An (effectively) endless index range: 2^62 sampling batches.
  start = pipeline_id + first * num_pipelines
  ds = tf.data.Dataset.range(start, 2**62, num_pipelines)
  ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return ds.with_options(options)


def examples(images, labels, num_classes, batch_size, run_seed, num_pipelines=1, pipeline_id=0):
  """Batches dict(image uint8 [batch_size, H, W, C], label int64 [batch_size]) of Gaussian
  samples fitted to (images, labels), the form rgd.data.tfrecord.parse_batch gives records."""
  model = fit(images, labels, num_classes)
  ds = sample_batches(model, generator_seed(run_seed), num_pipelines, pipeline_id)
  ds = ds.unbatch().batch(batch_size, drop_remainder=True)
  return ds.map(lambda x, y: {"image": x, "label": y})
