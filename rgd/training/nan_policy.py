"""The NaN policy's in-step half for rgd.training.trainer: it lives in rgd.runtime.nan_policy,
below the loop skeleton that applies it; this name stays for the trainer's import."""
from rgd.runtime.nan_policy import (  # pylint: disable=unused-import
    POLICIES, NanPolicy, agreed, all_finite, apply_if, keep_if_skipped)
