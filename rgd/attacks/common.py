"""Helpers shared by the attacks (rgd/attacks/protocol.py) and the evaluation cascade.

`seed` is either an int32 [2] stateless seed for the batch or int32 [B, 2] seeds, one per
example.

Per-example randomness. All random draws of an evaluation attack come from the example's own
seed (`uniform`, `normal`, `signs` below, a counter-based hash), so an example's result does not
depend on which other examples share its batch: attacking only the points still robust
(AutoAttack's practice, `autoattack.py run_standard_evaluation` and the restart loops of
`autopgd_base.py`) gives the same per-point result as attacking all of them. A [2] seed is
turned into per-example seeds by folding in the row index.
"""
import tensorflow as tf


# murmur3's 32-bit finaliser constants and the golden-ratio increment (Weyl sequence).
_M1, _M2, _GOLDEN = 0x85EBCA6B, 0xC2B2AE35, 0x9E3779B9


def logits_of(model_fn, x):
  """Float32 logits, also when the model runs under a bf16 policy."""
  return tf.cast(model_fn(x), tf.float32)


def target_class(clean_logits, t, num_targets):
  """Target t (a tensor, 0-based) of the targeted attacks: the class of the (t + 2)-th largest
  clean logit (AutoAttack's `sort()[1][:, -target_class]`, target_class = t + 2)."""
  ranked = tf.math.top_k(clean_logits, k=num_targets + 1).indices
  return tf.gather(ranked, t + 1, axis=1)


# ------------------------------------------------------------------------------------------
# Per-example counter-based random numbers. tf.random's stateless ops take one seed per call
# (vectorising them falls back to a while loop over the batch); this hash draws for a whole
# batch of seeds at once, under XLA too.


def _u32(t):
  return tf.bitcast(tf.cast(t, tf.int32), tf.uint32)


def _fmix(h):
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
  h = h * tf.constant(_M1, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(13, tf.uint32)))
  h = h * tf.constant(_M2, tf.uint32)
  return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))


def _key(seeds):
  """[B, 2] int32 seeds -> two [B] uint32 keys."""
  seeds = tf.convert_to_tensor(seeds)
  s0, s1 = _u32(seeds[:, 0]), _u32(seeds[:, 1])
  k0 = _fmix(s0 * tf.constant(_GOLDEN, tf.uint32) + _fmix(s1 + tf.constant(1, tf.uint32)))
  k1 = _fmix(s1 * tf.constant(_GOLDEN, tf.uint32) + _fmix(k0))
  return k0, k1


def fold_in(seeds, data):
  """Per-example seeds [B, 2] folded with `data` (an int scalar, or [B] ints): new seeds."""
  k0, k1 = _key(seeds)
  d = _u32(tf.broadcast_to(tf.cast(data, tf.int32), tf.shape(k0)))
  n0 = _fmix(tf.bitwise.bitwise_xor(k0, _fmix(d * tf.constant(_GOLDEN, tf.uint32))))
  n1 = _fmix(k1 + n0)
  return tf.bitcast(tf.stack([n0, n1], axis=1), tf.int32)


def example_seeds(seed, batch):
  """[2] seed -> [batch, 2] seeds (row i: the seed folded with i); [B, 2] seeds unchanged."""
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
  if seed.shape.rank == 2:
    return seed
  return fold_in(tf.broadcast_to(seed[None], [batch, 2]), tf.range(batch))


def random_bits(seeds, shape):
  """[B, *shape] uint32 hash of (example seed, element index)."""
  k0, k1 = _key(seeds)
  size = 1
  for d in shape:
    size *= int(d)
  counter = _u32(tf.range(size))[None, :] * tf.constant(_GOLDEN, tf.uint32)
  h = _fmix(tf.bitwise.bitwise_xor(k0[:, None], counter) + k1[:, None])
  h = _fmix(h + k0[:, None])
  return tf.reshape(h, tf.concat([tf.shape(k0), tf.constant(list(shape), tf.int32)], 0))


def uniform(seeds, shape, minval=0.0, maxval=1.0):
  """[B, *shape] float32 uniform in [minval, maxval), each row from its example's seed."""
  bits = tf.bitwise.right_shift(random_bits(seeds, shape), tf.constant(8, tf.uint32))
  u = tf.cast(bits, tf.float32) * (1.0 / (1 << 24))
  return minval + (maxval - minval) * u


def normal(seeds, shape):
  """[B, *shape] float32 standard normal (Box-Muller), each row from its example's seed."""
  size = 1
  for d in shape:
    size *= int(d)
  u = uniform(seeds, [2, size])
  radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[:, 0]))      # 1 - u in (0, 1]
  z = radius * tf.cos(2.0 * 3.141592653589793 * u[:, 1])
  return tf.reshape(z, tf.concat([tf.shape(u)[:1], tf.constant(list(shape), tf.int32)], 0))


def signs(seeds, shape):
  """[B, *shape] float32 random +-1."""
  return tf.where(uniform(seeds, shape) < 0.5, -1.0, 1.0)


def run_seeds(seeds, r):
  """The seeds of run (restart) r of an attack, per example."""
  return fold_in(seeds, r)
