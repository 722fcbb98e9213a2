"""Float32 as written, for certificates: no TF32, no XLA auto-clustering.

On Ampere and newer NVIDIA GPUs (A100, H100, H200) TensorFlow runs float32 matmuls and
convolutions in TF32 by default: a 10-bit mantissa, relative error about 2^-11 = 5e-4 per
product, fifty times the 1e-5 rounding allowance of rgd.certified.certificate. A certificate
computed that way can certify a point whose true float32 margin is negative. `exact_float32()`
turns TF32 off and XLA auto-clustering (which may rewrite a graph's arithmetic) off for the
duration of a certificate and restores both afterwards, also when the certificate raises.

Training keeps TensorFlow's defaults: its margins steer the optimiser and certify nothing.
"""
import contextlib
import os

import tensorflow as tf

from rgd.errors import ConfigError


def settings():
  """The precision settings in force now (recorded in every certification report)."""
  return dict(tensor_float_32_execution=bool(
                  tf.config.experimental.tensor_float_32_execution_enabled()),
              xla_jit=str(tf.config.optimizer.get_jit() or "off"),
              tf_xla_flags=os.environ.get("TF_XLA_FLAGS", ""),
              float_dtype="float32")


def _env_auto_jit():
  """TF_XLA_FLAGS=--tf_xla_auto_jit=1|2|fusible turns auto-clustering on process-wide, which
  tf.config cannot undo."""
  for flag in os.environ.get("TF_XLA_FLAGS", "").split():
    if flag.startswith("--tf_xla_auto_jit=") and flag.split("=", 1)[1] not in ("0", "-1", ""):
      return flag
  return None


@contextlib.contextmanager
def exact_float32():
  """Runs the block with TF32 and XLA auto-clustering off; yields the settings inside."""
  flag = _env_auto_jit()
  if flag:
    raise ConfigError(f"TF_XLA_FLAGS has {flag}: XLA auto-clustering may change the precision "
                      f"of a certificate; unset it for rgd.certify")
  tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
  jit = tf.config.optimizer.get_jit()
  tf.config.experimental.enable_tensor_float_32_execution(False)
  tf.config.optimizer.set_jit(False)
  try:
    yield settings()
  finally:
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    tf.config.optimizer.set_jit(jit if jit else False)
