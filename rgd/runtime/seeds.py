"""The one seed convention of a run.

Every random draw after initialisation is stateless and keyed by an int32 [2] key made from the
run's `seed`, the name of the stream that draws, and a counter, by folding each into the key in
turn, as DeepMind's JAX experiment folds the step into its key (`jax.random.fold_in`;
deepmind-research adversarial_robustness/jax/experiment.py):

    key = fold_in(fold_in([seed, 0], STREAMS[name]), counter)

so two streams never share a key whatever the seed, a resumed run repeats every draw, and the
number of replicas or workers does not change one. The counters:

  attack          the global step            the training attack's random start (trainer)
  image_summary   the global step            the attack behind the TensorBoard image grid
  crop            the input batch's index    pad-crop-flip (rgd.data.datasets)
  augment         the input batch's index    batch augmentations, one sub-stream per replica
  validation      the validation batch       the PGD-40 start of validation, per replica
  recalibration   the global step            the augmented images of a mean-shift
                                             recalibration, one sub-stream per chunk
                                             (rgd.data.recalibration)

tf.data's shuffles take integer seeds, `shuffle_seed(seed, name)`: the real-image order and the
generated shards (rgd.data.tfrecord.read_examples shuffles the shard list with it and its record
buffer with it + 1), and the class-conditional Gaussian generated on the fly
(rgd.datagen.gaussian_stream: `shuffle_seed(seed, "gaussian")` is its generator seed, the
`--generator_seed` of tools/make_tfrecords.py that writes the same samples). The initial
weights come from `keras.utils.set_random_seed(seed)`. Evaluation keys each example by its
index in the evaluation set instead (rgd.attacks.common.example_seeds), so that which subset is
attacked does not change a point's result.
"""
import tensorflow as tf

STREAMS = {"attack": 1, "image_summary": 2, "crop": 3, "augment": 4, "validation": 5,
           "real_order": 6, "generated_shards": 7, "gaussian": 8, "recalibration": 9}


def key(seed, stream, counter, sub=None):
  """int32 [2] key of draw `counter` of `stream` (and of sub-stream `sub`, e.g. a replica)."""
  if stream not in STREAMS:
    raise ValueError(f"unknown random stream {stream!r}; expected one of {sorted(STREAMS)}")
  k = tf.stack([tf.cast(seed, tf.int32), tf.constant(0, tf.int32)])
  k = tf.random.experimental.stateless_fold_in(k, STREAMS[stream], alg="philox")
  if sub is not None:
    k = tf.random.experimental.stateless_fold_in(k, tf.cast(sub, tf.int32), alg="philox")
  return tf.random.experimental.stateless_fold_in(k, tf.cast(counter, tf.int32), alg="philox")


def shuffle_seed(seed, stream):
  """Integer seed of a tf.data shuffle; distinct per stream for any run seed."""
  if stream not in STREAMS:
    raise ValueError(f"unknown random stream {stream!r}; expected one of {sorted(STREAMS)}")
  return (int(seed) * 1_000_003 + STREAMS[stream]) % (2**31 - 1)
