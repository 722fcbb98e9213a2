#!/usr/bin/env python
r"""Robust accuracy against the share of real images per batch, per generator (seed 001 Fig. 3(a)).

  python tools/study.py --output_dir=runs/study --base_gin=gin/quickstart.gin \
      --generators=none,gaussian,heldout --real_shares=0.1,0.2,0.3,0.5,0.7 --seeds=0,1,2

A grid of rgd.train runs (generator x share of real images per batch x seed) from one gin base,
each evaluated on the test split with rgd's attack suite (--suite, AutoAttack by default), then:
  OUT/results.json   every cell (clean and robust accuracy, the report it was read from), the
                     per-(generator, share) means and standard deviations over seeds, each
                     generator's complementarity and coverage (seed 001 Table 1), the settings
  OUT/results.md     the same as markdown tables
  OUT/figure.png     robust accuracy against the share of real images: mean +- std over seeds,
                     one line per generator, the real-only baseline as a band (seed 001 Fig. 3(a))

Generators (--generators):
  none      real images only (the baseline; one run per seed, drawn as the band)
  gaussian  the class-conditional Gaussian fitted to the run's training images, sampled on the fly
            (GENERATED='gaussian', rgd.datagen.gaussian_stream; seed 001 Sec. 3.2)
  heldout   real training images held out of the labelled set, their labels removed and replaced
            by a non-robust classifier's (the upper bound of Carmon et al. 2019's unlabelled data)
  edm       rgd's EDM trained on the labelled images (rgd.train_generator with --edm_gin), sampled
            and pseudo-labelled by tools/make_tfrecords.py

Every cell trains on the same labelled images: the first (1 - --heldout_fraction) of the data
set's training split (without its --num_validation validation images, the same for all); the
rest is the held-out pool of `heldout`. The pseudo-labeller is rgd.train with the base gin and
`Objective.kind='standard'` on the labelled images. Complementarity and coverage (rgd.datagen.
complementarity, Algorithm 1) use the pseudo-labeller's penultimate features (no Inception
weights offline) and N = min(--complementarity_samples, labelled, test, generated) images of
each set, uniformly drawn: not comparable with the paper's Inception numbers in absolute terms.

Resumable: run the same command again after a crash or kill. A cell whose report is complete
(the suite's JSON over the whole test split) is skipped; a cell killed mid-training resumes from
its checkpoint (rgd.train), mid-evaluation from its finished stages (rgd.evaluate). The results
are rewritten after every cell, marked `partial` until the grid is complete. Runs train and are
evaluated in this process (one TensorFlow start for the grid); the generator jobs run the entry
points (rgd.train_generator, tools/make_tfrecords.py) as subprocesses.
"""
import io
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)

from absl import app, flags, logging  # noqa: E402
import gin  # noqa: E402
import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

# Every gin configurable must be registered before the first run locks gin's configuration.
# rgd.cli defines --gin_bindings (applied to every run) and --tpu (where the runs train).
from rgd import cli, models  # noqa: E402
cli.define_flags()  # --gin_bindings (the grid's base bindings), --tpu
from rgd.data import datasets  # noqa: E402
from rgd.datagen import complementarity as comp, gaussian, gaussian_stream  # noqa: E402
from rgd.evaluation import adversarial  # noqa: E402
from rgd.runtime import fileio, strategy as strategy_lib  # noqa: E402
from rgd.training.loop import train_and_evaluate  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

GENERATORS = ("none", "gaussian", "heldout", "edm")

flags.DEFINE_string("output_dir", None, "Where the study's runs and results go.")
flags.DEFINE_string("base_gin", "gin/quickstart.gin", "The gin file of every run.")
flags.DEFINE_string("dataset", "digits", "The real data set (a tfds name, 'digits' or npz:DIR).")
flags.DEFINE_integer("num_validation", 200, "Validation images held out of the training split "
                     "(train_and_evaluate.num_validation of every run).")
flags.DEFINE_list("generators", ["none", "gaussian", "heldout"], f"Of {GENERATORS}; "
                  "NAME:S1/S2 gives NAME its own shares of real images instead of "
                  "--real_shares (e.g. heldout:0.3).")
flags.DEFINE_list("real_shares", ["0.1", "0.2", "0.3", "0.5", "0.7"], "Shares of real images "
                  "per batch (mixing_ratio) of the runs with generated data.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds (train_and_evaluate.seed).")
flags.DEFINE_float("heldout_fraction", 0.5, "Share of the training split held out of the "
                   "labelled set, as the unlabelled pool of `heldout` (the same split for all "
                   "generators).")
flags.DEFINE_string("suite", "autoattack", "rgd.evaluate's suite on the test split.")
flags.DEFINE_multi_string("eval_bindings", [], "Gin bindings of the suite, e.g. "
                          "\"aa_mt_suite.mt_restarts=3\" (as rgd.evaluate --gin_bindings).")
flags.DEFINE_integer("eval_batch_size", 500, "Examples per attack batch.")
flags.DEFINE_integer("num_test", None, "Evaluate the first N test images (default: all).")
flags.DEFINE_integer("complementarity_samples", 10_000, "At most N images of each set for "
                     "complementarity and coverage (seed 001: 10k).")
flags.DEFINE_string("edm_gin", "gin/edm_debug.gin", "Gin file of rgd.train_generator for `edm`.")
flags.DEFINE_multi_string("edm_bindings", [], "More gin bindings of rgd.train_generator.")
flags.DEFINE_integer("edm_images", 10_000, "EDM samples to pseudo-label for `edm`.")
flags.DEFINE_integer("edm_sample_steps", 8, "EDM sampler steps (--num_steps of the tool).")
flags.DEFINE_bool("report_only", False, "Only rewrite the results from the finished cells.")

FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------------------------
# The grid.


def cell_name(generator, share, seed):
  return f"{generator}_real{int(round(100 * share)):03d}_seed{seed}"


def parse_generators(specs, shares):
  """{name: [shares]} from NAME or NAME:S1/S2 specs (module docstring); `none`: [1.0]."""
  out = {}
  for spec in specs:
    name, _, own = spec.partition(":")
    if name not in GENERATORS:
      raise app.UsageError(f"--generators: unknown {name!r}; expected some of {GENERATORS}")
    values = [float(v) for v in own.split("/")] if own else list(shares)
    if any(not 0.0 <= v < 1.0 for v in values):
      raise app.UsageError(f"--generators={spec}: each share of real images must be in [0, 1)")
    out[name] = [1.0] if name == "none" else values
  return out


def grid(generators, seeds):
  """[(generator, share, seed)] for {generator: shares}, seed by seed, so that a partial grid
  covers every setting of the first seeds. `none` has one cell per seed (share 1)."""
  return [(g, float(share), int(seed)) for seed in seeds for g, shares in generators.items()
          for share in shares]


def report_path(cell_dir, suite, norm, eps):
  return os.path.join(cell_dir, "eval", adversarial.report_name(suite, norm, eps) + ".json")


def finished_report(cell_dir, suite, num_test, eval_bindings=()):
  """The cell's report if it is complete (the suite, with `eval_bindings`, over `num_test` test
  images), else None."""
  info = os.path.join(cell_dir, "model.json")
  if not fileio.gfile.exists(info):
    return None
  run = fileio.read_json(info)
  path = report_path(cell_dir, suite, run["norm"], run["eps"])
  if not fileio.gfile.exists(path):
    return None
  try:
    report = fileio.read_json(path)
  except ValueError:
    return None
  if (report.get("suite") != suite or report.get("num_examples") != num_test or
      "robust_accuracy" not in report or
      report.get("settings", {}).get("eval_bindings", []) != list(eval_bindings)):
    return None
  return dict(report, path=path)


# ----------------------------------------------------------------------------------------------
# Data: the labelled training images, the held-out pool, validation and test.


def _save_npz(path, **arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  fileio.atomic_write_bytes(path, buf.getvalue())


def prepare_data(out, dataset, num_validation, heldout_fraction):
  """Writes OUT/data/study (train.npz = labelled + validation, test.npz), OUT/data/pool.npz
  (images only) and OUT/data/labelled (train.npz = the labelled images alone, for the EDM);
  returns their description (also OUT/data/data.json, written last: the marker of completion)."""
  folder = os.path.join(out, "data")
  marker = os.path.join(folder, "data.json")
  if fileio.gfile.exists(marker):
    return fileio.read_json(marker)
  x, y = datasets.load_split(dataset, "train", num_validation=num_validation)
  xv, yv = datasets.load_split(dataset, "validation", num_validation=num_validation)
  xt, yt = datasets.load_split(dataset, "test")
  n_lab = int(round(len(x) * (1.0 - heldout_fraction)))
  for sub in ("study", "labelled"):
    fileio.makedirs(os.path.join(folder, sub))
  _save_npz(os.path.join(folder, "study", "train.npz"), image=np.concatenate([x[:n_lab], xv]),
            label=np.concatenate([y[:n_lab], yv]))
  _save_npz(os.path.join(folder, "study", "test.npz"), image=xt, label=yt)
  _save_npz(os.path.join(folder, "labelled", "train.npz"), image=x[:n_lab], label=y[:n_lab])
  _save_npz(os.path.join(folder, "labelled", "test.npz"), image=xt, label=yt)
  if n_lab < len(x):
    _save_npz(os.path.join(folder, "pool.npz"), image=x[n_lab:])
  info = dict(source=dataset, dataset="npz:" + os.path.abspath(os.path.join(folder, "study")),
              edm_dataset="npz:" + os.path.abspath(os.path.join(folder, "labelled")),
              pool=os.path.abspath(os.path.join(folder, "pool.npz")) if n_lab < len(x) else None,
              num_labelled=n_lab, num_pool=len(x) - n_lab, num_validation=len(xv),
              num_test=len(xt))
  fileio.atomic_write_json(marker, info)
  return info


# ----------------------------------------------------------------------------------------------
# Training and evaluation of one run, in this process.


def train_run(model_dir, base_gin, bindings):
  """rgd.train's job, in this process: gin from scratch, then train_and_evaluate."""
  gin.clear_config()
  keras.backend.clear_session()
  cli.parse_gin([base_gin], bindings)
  logging.info("Training %s with %s", model_dir, bindings)
  if "strategy" not in _STRATEGY:  # one TPU/GPU initialisation for the whole grid
    _STRATEGY["strategy"] = strategy_lib.get_strategy(FLAGS.tpu)
  return train_and_evaluate(model_dir, _STRATEGY["strategy"])


_STRATEGY = {}


def evaluate_run(model_dir, dataset, suite, batch_size, num_test, eval_bindings=()):
  """rgd.evaluate --model_dir=model_dir --suite=suite --gin_bindings=... on the test split, in
  this process."""
  gin.clear_config()
  cli.parse_gin([], list(eval_bindings))
  run = fileio.read_json(os.path.join(model_dir, "model.json"))
  x, y = datasets.load_split(dataset, "test")
  x, y = x[:num_test], y[:num_test]
  path = os.path.abspath(os.path.join(model_dir, "model.keras"))
  settings = dict(model=path, checkpoint_step=run.get("step"), dataset=dataset, split="test",
                  command=" ".join(sys.argv), eval_bindings=list(eval_bindings))
  return adversarial.evaluate_model(models.load(path), x, y, suite, run["norm"], run["eps"],
                                    batch_size, 0, os.path.join(model_dir, "eval"), settings,
                                    source=path)


# ----------------------------------------------------------------------------------------------
# Generators.


def _subprocess(args, log_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  logging.info("Running %s (log %s)", " ".join(args), log_path)
  with open(log_path, "a") as log:  # local only: a subprocess's log next to the cell
    status = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, check=False).returncode
  if status:
    raise RuntimeError(f"{' '.join(args)} failed with status {status}; see {log_path}")


def _records_pattern(folder):
  return fileio.read_json(os.path.join(folder, "metadata.json"))["pattern"]


def labeler_dir(out, data, base_gin, bindings):
  """The pseudo-labeller: the base run, standard training, real labelled images only."""
  folder = os.path.join(out, "labeler")
  if not fileio.gfile.exists(os.path.join(folder, "last.keras")):
    train_run(folder, base_gin, list(bindings) + [
        f"DATASET={data['dataset']!r}",
        f"train_and_evaluate.num_validation={data['num_validation']}",
        "train_and_evaluate.generated_pattern=None", "Objective.kind='standard'"])
  if not fileio.gfile.exists(os.path.join(folder, "last.keras")):
    sys.exit("the pseudo-labeller stopped before the end of its training (SIGTERM); run the "
             "same command again to resume it")
  return folder


def prepare_generator(name, out, data, base_gin, bindings):
  """GENERATED of the runs with `name` (None for `none`)."""
  if name == "none":
    return None
  if name == "gaussian":
    return "gaussian"
  folder = os.path.join(out, "generators", name)
  fileio.makedirs(folder)
  records = os.path.join(folder, "records")
  if fileio.gfile.exists(os.path.join(records, "metadata.json")):
    return _records_pattern(records)
  labeler = os.path.join(labeler_dir(out, data, base_gin, bindings), "model.keras")
  tool = os.path.join("tools", "make_tfrecords.py")
  if name == "heldout":
    if not data["pool"]:
      raise app.UsageError("--generators=heldout needs --heldout_fraction > 0")
    _subprocess([tool, f"--input={data['pool']}", f"--labeler={labeler}",
                 f"--output_dir={records}"], os.path.join(folder, "records.log"))
  elif name == "edm":
    edm = os.path.join(folder, "model")
    # Run again, rgd.train_generator resumes from its checkpoint (and returns when done).
    _subprocess(["-m", "rgd.train_generator", f"--gin_file={FLAGS.edm_gin}",
                 f"--model_dir={edm}", f"--gin_bindings=DATASET={data['edm_dataset']!r}"] +
                [f"--gin_bindings={b}" for b in FLAGS.edm_bindings],
                os.path.join(folder, "train_generator.log"))
    _subprocess([tool, f"--generator=edm:{edm}", f"--num_images={FLAGS.edm_images}",
                 f"--num_steps={FLAGS.edm_sample_steps}", f"--labeler={labeler}",
                 f"--output_dir={records}"], os.path.join(folder, "records.log"))
  else:
    raise app.UsageError(f"--generators: unknown {name!r}; expected some of {GENERATORS}")
  return _records_pattern(records)


def complementarity(name, pattern, out, data, base_gin, bindings, max_samples):
  """Seed 001 Table 1's columns for one generator (cached in its folder)."""
  path = os.path.join(out, "generators", name, "complementarity.json")
  if fileio.gfile.exists(path):
    return fileio.read_json(path)
  x, y = datasets.load_split(data["dataset"], "train", num_validation=data["num_validation"])
  xt, _ = datasets.load_split(data["dataset"], "test")
  k = datasets.num_classes_of(data["dataset"])
  rng = np.random.default_rng(0)
  if name == "gaussian":  # the first images of the stream of run seed 0
    n = min(max_samples, len(x), len(xt))
    model = gaussian_stream.fit(x, y, k)
    seed = gaussian_stream.generator_seed(0)
    batches = -(-n // gaussian.SAMPLE_BATCH)
    gen = np.concatenate([model.batch(j, seed=seed)[0] for j in range(batches)])[:n]
  else:
    n = min(max_samples, len(x), len(xt), data["num_pool"] if name == "heldout" else
            FLAGS.edm_images)
    gen, _ = comp.read_generated(pattern, n, k, 2, balanced=False)
  train = x[np.sort(rng.choice(len(x), n, replace=False))]
  test = xt[np.sort(rng.choice(len(xt), n, replace=False))]
  labeler = keras.saving.load_model(
      os.path.join(labeler_dir(out, data, base_gin, bindings), "model.keras"))
  extractor = comp.penultimate_extractor(labeler)
  feats = [comp.extract_features(extractor, a) for a in (train, test, gen)]
  result = comp.complementarity_and_coverage(*feats, pca_dim=min(100, n - 1))
  result = {key: (float(v) if isinstance(v, (float, np.floating)) else v)
            for key, v in result.items()}
  result["extractor"] = "the pseudo-labeller's penultimate layer"
  fileio.atomic_write_json(path, result)
  return result


# ----------------------------------------------------------------------------------------------
# Results: JSON, markdown, figure.


def summarize(cells, reports):
  """Per (generator, share): mean and std over seeds of clean and robust accuracy, and the
  difference of robust accuracy from the real-only baseline with its standard error."""
  groups = {}
  for (g, share, seed), report in zip(cells, reports):
    if report is not None:
      groups.setdefault((g, share), []).append(
          (seed, report["clean_accuracy"], report["robust_accuracy"]))
  rows = []
  base = groups.get(("none", 1.0))
  for (g, share), values in sorted(groups.items(), key=lambda kv: (kv[0][0] != "none", kv[0])):
    clean = np.array([v[1] for v in values])
    robust = np.array([v[2] for v in values])
    row = dict(generator=g, real_share=share, seeds=[v[0] for v in values], n=len(values),
               clean_mean=float(clean.mean()), clean_std=_std(clean),
               robust_mean=float(robust.mean()), robust_std=_std(robust))
    if base and g != "none":
      b = np.array([v[2] for v in base])
      row["robust_delta"] = float(robust.mean() - b.mean())
      # Standard error of a difference of two independent means (sample std, n - 1).
      row["robust_delta_se"] = float(np.sqrt(_var(robust) / len(robust) + _var(b) / len(b)))
    rows.append(row)
  return rows


def _var(a):
  return float(np.var(a, ddof=1)) if len(a) > 1 else float("nan")


def _std(a):
  return float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")


def _pct(mean, std):
  return f"{100 * mean:.2f}" + ("" if np.isnan(std) else f" ± {100 * std:.2f}")


def _suite_name(settings):
  bindings = settings.get("eval_bindings") or []
  return settings["suite"] + (f" with {', '.join(bindings)}" if bindings else "")


def markdown(result):
  lines = []
  if result["partial"]:
    lines.append(f"**Partial grid: {result['num_finished']} of {result['num_cells']} cells "
                 "finished.**\n")
  lines += ["| generator | real share | clean (%) | robust (%) | robust - real only (pp) | "
            "seeds |", "|---|---|---|---|---|---|"]
  for r in result["summary"]:
    delta = ""
    if "robust_delta" in r:
      delta = f"{100 * r['robust_delta']:+.2f}"
      if not np.isnan(r["robust_delta_se"]):
        delta += f" ± {100 * r['robust_delta_se']:.2f}"
    lines.append(f"| {r['generator']} | {100 * r['real_share']:.0f}% | "
                 f"{_pct(r['clean_mean'], r['clean_std'])} | "
                 f"{_pct(r['robust_mean'], r['robust_std'])} | {delta} | {r['n']} |")
  lines.append("\nMeans ± standard deviations over seeds; the difference's ± is its standard "
               f"error. Robust: {_suite_name(result['settings'])} on the test split "
               f"({result['settings']['num_test']} images), {result['settings']['threat']}.")
  if result["complementarity"]:
    lines += ["", "| generator | c_train | c_test | c_self | v_train | v_test | N |",
              "|---|---|---|---|---|---|---|"]
    for g, c in result["complementarity"].items():
      lines.append(f"| {g} | {100 * c['c_train']:.1f}% | {100 * c['c_test']:.1f}% | "
                   f"{100 * c['c_self']:.1f}% | {100 * c['v_train']:.1f}% | "
                   f"{100 * c['v_test']:.1f}% | {c['num_generated']} |")
    lines.append("\nComplementarity (nearest neighbour of each generated image among train, "
                 "test and the other generated ones; ideal 1/3 each) and coverage (unique train/"
                 "test neighbours over N), seed 001 Algorithm 1, in the pseudo-labeller's "
                 "features.")
  return "\n".join(lines) + "\n"


def figure(result, path):
  fig, ax = plt.subplots(figsize=(6, 4))
  rows = result["summary"]
  base = [r for r in rows if r["generator"] == "none"]
  if base:
    b = base[0]
    s = 0.0 if np.isnan(b["robust_std"]) else b["robust_std"]
    ax.axhspan(100 * (b["robust_mean"] - s), 100 * (b["robust_mean"] + s), color="0.85",
               label=f"real only (n={b['n']})")
    ax.axhline(100 * b["robust_mean"], color="0.5", lw=1)
    ax.errorbar([100], [100 * b["robust_mean"]], yerr=[100 * s], marker="s", color="0.3",
                capsize=3)
  for g in [g for g in GENERATORS if g != "none"]:
    pts = sorted((r for r in rows if r["generator"] == g), key=lambda r: r["real_share"])
    if not pts:
      continue
    x = [100 * r["real_share"] for r in pts]
    y = [100 * r["robust_mean"] for r in pts]
    e = [0.0 if np.isnan(r["robust_std"]) else 100 * r["robust_std"] for r in pts]
    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=g)
  ax.set_xlabel("share of real images per batch (%)")
  ax.set_ylabel(f"robust test accuracy (%), {result['settings']['suite']}"
                + (" (reduced)" if result["settings"]["eval_bindings"] else ""))
  title = f"{result['settings']['dataset']}, {result['settings']['threat']}"
  if result["partial"]:
    title += f" (partial: {result['num_finished']}/{result['num_cells']} cells)"
  ax.set_title(title, fontsize=10)
  ax.set_xlim(0, 103)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_results(out, cells, reports, settings, comp):
  finished = sum(r is not None for r in reports)
  result = dict(
      partial=finished < len(cells), num_cells=len(cells), num_finished=finished,
      settings=settings,
      cells=[dict(name=cell_name(*c), generator=c[0], real_share=c[1], seed=c[2],
                  clean_accuracy=None if r is None else r["clean_accuracy"],
                  robust_accuracy=None if r is None else r["robust_accuracy"],
                  report=None if r is None else os.path.relpath(r["path"], out),
                  eval_seconds=None if r is None else r["seconds"])
             for c, r in zip(cells, reports)],
      summary=summarize(cells, reports), complementarity=comp)
  fileio.atomic_write_json(os.path.join(out, "results.json"), result)
  fileio.atomic_write_text(os.path.join(out, "results.md"), markdown(result))
  figure(result, os.path.join(out, "figure.png"))
  return result


# ----------------------------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required")
  shares = [float(s) for s in FLAGS.real_shares]
  if any(not 0.0 <= s < 1.0 for s in shares):
    raise app.UsageError(f"--real_shares={FLAGS.real_shares}: each must be in [0, 1)")
  generators = parse_generators(FLAGS.generators, shares)
  out = os.path.abspath(FLAGS.output_dir)
  fileio.makedirs(out)
  base_gin = os.path.join(ROOT, FLAGS.base_gin) if not os.path.isabs(FLAGS.base_gin) else \
      FLAGS.base_gin
  bindings = list(FLAGS.gin_bindings)
  data = prepare_data(out, FLAGS.dataset, FLAGS.num_validation, FLAGS.heldout_fraction)
  num_test = min(FLAGS.num_test or data["num_test"], data["num_test"])
  cells = grid(generators, FLAGS.seeds)
  cell_dirs = [os.path.join(out, "runs", cell_name(*c)) for c in cells]
  evb = list(FLAGS.eval_bindings)
  reports = [finished_report(d, FLAGS.suite, num_test, evb) for d in cell_dirs]
  settings = dict(base_gin=FLAGS.base_gin, gin_bindings=bindings, dataset=FLAGS.dataset,
                  data=data, suite=FLAGS.suite, eval_bindings=evb, num_test=num_test,
                  command=" ".join(a for a in sys.argv if a != "--report_only"),
                  generators=generators,
                  seeds=[int(s) for s in FLAGS.seeds], threat="")
  comp = {}
  if not FLAGS.report_only:
    patterns = {g: prepare_generator(g, out, data, base_gin, bindings) for g in generators}
    for i, ((g, share, seed), cell_dir) in enumerate(zip(cells, cell_dirs)):
      if reports[i] is not None:
        logging.info("Cell %s is finished (%s); skipping it.", cell_name(g, share, seed),
                     reports[i]["path"])
        print(f"skip {cell_name(g, share, seed)}", flush=True)
        continue
      start = time.time()
      train_run(cell_dir, base_gin, bindings + [
          f"DATASET={data['dataset']!r}",
          f"train_and_evaluate.num_validation={data['num_validation']}",
          f"train_and_evaluate.generated_pattern={patterns[g]!r}",
          f"train_and_evaluate.mixing_ratio={share}", f"train_and_evaluate.seed={seed}"])
      if not fileio.gfile.exists(os.path.join(cell_dir, "last.keras")):
        # rgd.train's SIGTERM handling checkpointed and returned before the end: stop here too
        # (a half-trained model must not be evaluated as the cell's result).
        sys.exit(f"{cell_name(g, share, seed)} stopped before the end of its training "
                 "(SIGTERM); run the same command again to resume it")
      evaluate_run(cell_dir, data["dataset"], FLAGS.suite, FLAGS.eval_batch_size, num_test,
                   evb)
      reports[i] = finished_report(cell_dir, FLAGS.suite, num_test, evb)
      print(f"done {cell_name(g, share, seed)}: clean {reports[i]['clean_accuracy']:.4f} "
            f"robust {reports[i]['robust_accuracy']:.4f} ({time.time() - start:.0f} s)",
            flush=True)
      settings["threat"] = _threat(cell_dir)
      write_results(out, cells, reports, settings, comp)
    for g in generators:
      if g != "none":
        comp[g] = complementarity(g, patterns[g], out, data, base_gin, bindings,
                                  FLAGS.complementarity_samples)
  else:
    for g in generators:
      path = os.path.join(out, "generators", g, "complementarity.json")
      if fileio.gfile.exists(path):
        comp[g] = fileio.read_json(path)
  done = [d for d, r in zip(cell_dirs, reports) if r is not None]
  if done:
    settings["threat"] = _threat(done[0])
  result = write_results(out, cells, reports, settings, comp)
  print(f"{result['num_finished']} of {result['num_cells']} cells: "
        f"{os.path.join(out, 'results.md')}, results.json, figure.png", flush=True)


def _threat(cell_dir):
  run = fileio.read_json(os.path.join(cell_dir, "model.json"))
  eps = run["eps"]
  return f"{run['norm']} eps {eps:.4g} ({eps * 255:.3g}/255)"


if __name__ == "__main__":
  app.run(main)
