"""Per-stage state of an evaluation, so that an interrupted one resumes instead of starting over
(an AA+MT run on 10k images takes hours on one GPU).

As AutoAttack's `state_path` (fra31/auto-attack autoattack/state.py `EvaluationState`: the set
of attacks run and the robust flags, updated after each attack of `run_standard_evaluation`):
after each stage of the cascade, `OUTPUT_DIR/<report>.state.npz` is written atomically with the
per-example robust flags after every finished stage, the adversarial examples found so far, the
stages' statistics and the settings. A re-run with the same settings skips the finished stages.
Unlike AutoAttack's state, it also keeps the adversarial examples (the report's .npz needs
them) and the settings: a re-run with other settings (model, data, suite, eps, seed, attack
parameters, batch size, XLA) is refused with the differences listed, since mixing stages of two
evaluations would give a number that belongs to neither. The file is deleted once the report
is written.
"""
import hashlib
import json

import numpy as np

from rgd.errors import StateMismatchError
from rgd.runtime import fileio

KEYS = ("robust_after", "x_adv", "clean_correct", "stage_seconds", "attacked", "point_runs")


def fingerprint(images, labels, **settings):
  """What must not change between an interrupted evaluation and its resumption."""
  return dict(settings, images_sha256=hashlib.sha256(np.ascontiguousarray(images)).hexdigest(),
              labels_sha256=hashlib.sha256(np.ascontiguousarray(labels)).hexdigest())


class StageState:
  """`load(clean_correct)` -> the finished stages' results or None; `save(results)` after a
  stage; `remove()` when the evaluation is complete."""

  def __init__(self, path, settings):
    self.path = path
    self.settings = json.loads(json.dumps(settings, sort_keys=True))  # as read back

  def load(self, clean_correct):
    if not fileio.gfile.exists(self.path):
      return None
    saved = fileio.load_npz(self.path)
    old = json.loads(str(saved["settings"]))
    diff = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
    if diff:
      lines = "; ".join(f"{k}: was {_short(old.get(k))}, now {_short(self.settings.get(k))}"
                        for k in diff)
      raise StateMismatchError(
          f"{self.path}: saved by an evaluation with other settings ({lines}). Resume with the "
          "same settings, or delete the file (or use another --output_dir) to start over")
    if not np.array_equal(saved["clean_correct"], clean_correct):
      raise StateMismatchError(f"{self.path}: the model now classifies other clean points "
                               "correctly than when this state was saved (other weights under "
                               "the same name?); delete the file to start over")
    out = {k: saved[k] for k in KEYS}
    out["robust_after"] = list(out["robust_after"])
    for k in ("stage_seconds", "attacked", "point_runs"):
      out[k] = out[k].tolist()
    return out

  def save(self, results):
    arrays = {k: results[k] for k in KEYS}
    arrays["robust_after"] = np.stack(results["robust_after"])
    fileio.save_npz(self.path, settings=np.array(json.dumps(self.settings, sort_keys=True)),
                    **arrays)

  def remove(self):
    if fileio.gfile.exists(self.path):
      fileio.gfile.remove(self.path)


def _short(value, limit=80):
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."
