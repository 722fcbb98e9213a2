"""Robust accuracy of a model under an attack suite (rgd.attacks.suites, run by
rgd.evaluation.cascade), with the checks
before the attacks, per-stage resume and the report files: the library half of rgd.evaluate."""
import json
import os
import re
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from rgd.attacks import suites
from rgd.errors import ConfigError, DataError
from rgd.evaluation import cascade, checks, per_class, reports, stage_state
from rgd.evaluation.target import NORMS, parse_eps, versions
from rgd.runtime import fileio
from rgd.runtime.progress import Progress


def report_name(suite, norm, eps):
  return f"eval_{suite.replace('+', '_')}_{norm}_{eps:.6g}"


def evaluate_model(model, images, labels, suite="aa+mt", norm="linf", eps=8 / 255,
                   batch_size=500, seed=0, output_dir=None, settings=None, jit_compile=False,
                   strategy=None, source="model", stream=None, class_names=None):
  """Runs `suite` on uint8 or float [0, 1] `images` and writes the report files to
  `output_dir` (if given). Returns the report dict; its `per_class` rows name the classes by
  `class_names` (label order) where given (rgd.evaluation.per_class)."""
  if norm not in NORMS:
    raise ConfigError(f"--norm={norm!r}: expected one of {NORMS}")
  eps = parse_eps(eps)
  stages = suites.get_suite(suite, norm, eps)
  if len(images) == 0:
    raise DataError(f"{source}: the dataset is empty")
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  labels = np.asarray(labels).astype(np.int32)
  model_fn = lambda x: model(x, training=False)

  # Checks before spending time on attacks (AutoAttack's checks.py).
  probe = tf.constant(images[:min(len(images), batch_size)])
  probe_logits = tf.cast(model_fn(probe), tf.float32).numpy()
  checks.check_output_shape(probe_logits, len(probe), int(labels.max()) + 1, source)
  checks.check_finite(probe_logits, source)
  warnings = (checks.check_randomized(model_fn, probe) + checks.check_logits(probe_logits) +
              checks.check_num_classes(probe_logits.shape[1], stages))
  for w in warnings:  # now, not after hours of attacks
    logging.warning(w)
  state = None
  if output_dir:  # finished stages survive an interruption (rgd.evaluation.stage_state)
    state = stage_state.StageState(
        os.path.join(output_dir, report_name(suite, norm, eps) + ".state.npz"),
        stage_state.fingerprint(images, labels, model=(settings or {}).get("model", source),
                               suite=suite, norm=norm, eps=eps, seed=seed,
                               batch_size=batch_size, jit_compile=jit_compile,
                               stages=[s.name for s in stages], gin=gin.config_str()))

  progress = {}

  def on_batch(s, name, done, total):
    # `total` bounds the stage's batches (every run on every point); restarts that attack
    # only the survivors end early, with a last call done == total.
    if done == 0:
      progress[s] = Progress(total, desc=f"stage {s + 1}/{len(stages)} {name}", unit="batch",
                             stream=stream)
    else:
      progress[s].update(done - progress[s].count)
    if done == total:
      progress[s].close()

  start = time.monotonic()
  result = cascade.run_cascade(stages, model_fn, images, labels, batch_size, seed, strategy,
                               jit_compile, on_batch, state)
  names = [s.name for s in stages]
  black_box = checks.check_black_box(stages, result["robust_after"])
  for w in black_box:
    logging.warning(w)
  warnings += black_box
  n = len(images)
  report = dict(
      suite=suite, norm=norm, eps=eps, num_examples=n,
      clean_accuracy=float(result["clean_correct"].mean()),
      robust_accuracy=float(result["robust"].mean()),
      # seconds_per_attacked_point: the stage's time over the points it attacked; point_runs: the
      # points summed over its runs (restarts, targets), each run attacking only survivors.
      stages=[dict(name=name, robust_accuracy=float(r.mean()), seconds=sec, attacked=att,
                   seconds_per_attacked_point=sec / att if att else 0.0, point_runs=pr)
              for name, r, sec, att, pr in zip(names, result["robust_after"],
                                                result["stage_seconds"], result["attacked"],
                                                result["point_runs"])],
      seconds=time.monotonic() - start,
      settings=dict(settings or {}, seed=seed, batch_size=batch_size, jit_compile=jit_compile,
                    bucket_sizes=result["bucket_sizes"], gin=gin.config_str()),
      versions=versions(), warnings=warnings,
      restored_stages=names[:result["restored_stages"]],
      per_class=per_class.rows(labels, dict(clean_accuracy=result["clean_correct"],
                                            robust_accuracy=result["robust"]), class_names))
  if output_dir:
    write_report(output_dir, report, result, labels)
    state.remove()
  return report


def write_report(output_dir, report, result, labels):
  name = report_name(report["suite"], report["norm"], report["eps"])
  text = json.dumps(report, indent=2, sort_keys=True) + "\n"
  fileio.atomic_write_text(os.path.join(output_dir, name + ".json"), text)
  arrays = dict(label=labels, clean_correct=result["clean_correct"], robust=result["robust"],
                robust_after=np.stack(result["robust_after"]) if result["robust_after"] else
                np.zeros((0, len(labels)), bool),
                stage_names=np.array([s["name"] for s in report["stages"]], dtype=str),
                x_adv=result["x_adv"])
  fileio.save_npz(os.path.join(output_dir, name + ".npz"), **arrays)
  prefix = f"eval/{report['suite']}/{report['norm']}_{report['eps']:.6g}"
  scalars = {f"{prefix}/clean_accuracy": report["clean_accuracy"],
             f"{prefix}/robust_accuracy": report["robust_accuracy"]}
  scalars.update({f"{prefix}/after_{stage['name']}": stage["robust_accuracy"]
                  for stage in report["stages"]})
  table = per_class.markdown(report["per_class"], ("clean_accuracy", "robust_accuracy"))
  reports.write_tensorboard(output_dir, report["settings"].get("checkpoint_step"), scalars,
                            {f"{prefix}/report": "```\n" + text + "```",
                             f"{prefix}/per_class": table})


def architecture_name(model_name):
  """RobustBench's spelling of an rgd architecture: 'wrn-28-10' / 'wrn28_10' ->
  'WideResNet-28-10', 'dm_preact_resnet18' / 'preact_resnet18' -> 'PreActResNet-18'."""
  m = re.fullmatch(r"wrn[-_]?(\d+)[-_](\d+)", model_name)
  if m:
    return f"WideResNet-{m.group(1)}-{m.group(2)}"
  m = re.fullmatch(r"(?:dm_)?preact_resnet(\d+)", model_name)
  if m:
    return f"PreActResNet-{m.group(1)}"
  m = re.fullmatch(r"resnet(\d+)", model_name)
  return f"ResNet-{m.group(1)}" if m else model_name


def _eps_text(eps):
  """8/255 as RobustBench writes it when eps is a whole number of 255ths, else the number."""
  k = round(eps * 255)
  return f"{k}/255" if abs(eps * 255 - k) < 1e-6 else f"{eps:.6g}"


def robustbench_entry(report, architecture, dataset):
  """The fields of a RobustBench result file (model_info/<dataset>/<Linf|L2>/<name>.json) that
  an AutoAttack report fills: accuracies as percent strings with two decimals, eps as '8/255',
  so a leaderboard entry can be compared line by line; plus the number of examples."""
  return dict(
      dataset=dataset, threat_model={"linf": "Linf", "l2": "L2"}[report["norm"]],
      architecture=architecture, eps=_eps_text(report["eps"]),
      clean_acc=f"{100 * report['clean_accuracy']:.2f}",
      autoattack_acc=f"{100 * report['robust_accuracy']:.2f}",
      number_forward_passes=1, n_examples=report["num_examples"])


def write_robustbench_entry(output_dir, report, architecture, dataset):
  """Writes `<report name>.robustbench.json` beside the report; returns its path."""
  path = os.path.join(output_dir, report_name(report["suite"], report["norm"], report["eps"]) +
                      ".robustbench.json")
  fileio.atomic_write_json(path, robustbench_entry(report, architecture, dataset))
  return path
