"""Attack objectives. Each takes float32 logits [B, K] and returns a per-example loss [B] that
the attack *maximises*.

Untargeted losses take integer labels [B]; targeted ones also take target classes [B]; the KL
loss takes the clean probabilities [B, K] as its target (TRADES, Zhang et al. 2019).
"""
import tensorflow as tf

# Denominator guard of the DLR loss (Croce & Hein 2020, Eq. 6 and AutoAttack's code).
_DLR_EPS = 1e-12


def _true_logit(logits, labels):
  return tf.gather(logits, tf.cast(labels, tf.int32), axis=1, batch_dims=1)


def _max_other_logit(logits, labels):
  is_label = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[1]) > 0.5
  return tf.reduce_max(tf.where(is_label, tf.fill(tf.shape(logits), -float("inf")), logits), 1)


def ce_loss(logits, labels):
  return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)


def margin_loss(logits, labels):
  """max_{i != y} z_i - z_y: positive exactly when the point is misclassified."""
  return _max_other_logit(logits, labels) - _true_logit(logits, labels)


def targeted_margin_loss(logits, labels, targets):
  """z_t - z_y, the MultiTargeted objective (Gowal et al. 2019)."""
  return _true_logit(logits, targets) - _true_logit(logits, labels)


def dlr_loss(logits, labels):
  """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12) (Croce & Hein 2020, Eq. 6)."""
  top = tf.math.top_k(logits, k=3).values
  return margin_loss(logits, labels) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def targeted_dlr_loss(logits, labels, targets):
  """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) (Croce & Hein 2020, Sec. 3)."""
  top = tf.math.top_k(logits, k=4).values
  denom = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS
  return targeted_margin_loss(logits, labels, targets) / denom


def kl_loss(logits, target_probs):
  """KL(p_clean || softmax(logits)) per example: the TRADES inner objective."""
  log_q = tf.nn.log_softmax(logits)
  p = tf.convert_to_tensor(target_probs, logits.dtype)
  log_p = tf.math.log(tf.maximum(p, 1e-30))
  return tf.reduce_sum(tf.where(p > 0, p * (log_p - log_q), 0.0), axis=1)


def misclassified(logits, labels):
  """True where the top logit is not the label. Ties count as correct only if the label wins
  the argmax, which is the convention of AutoAttack (argmax picks the first maximum)."""
  return tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32),
                      tf.cast(labels, tf.int32))
