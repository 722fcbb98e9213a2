"""The exit contract (README "Exit statuses", rgd.cli.run): every entry point and every tool with
a main ends a bad input with the documented status and one line on stderr that names the
culprit, and no traceback.

The messages are checked in process (cli.run around each main; SystemExit caught, stderr
captured). The real exit status is checked with one subprocess per entry point and per absl
tool (their absl flags cannot share a process with the entry points'), all started together.
No case reaches a tfds download: every data set is an npz:DIR.
"""
import concurrent.futures
import importlib
import os
import subprocess
import sys

from absl import app, flags
import gin
import pytest

from rgd import cli, errors

from conftest import write_npz_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny data set, a bad one, a plain (not certifiable) .keras model in a run directory, a
  truncated copy of it, a file that is no model, a bad .npy checkpoint."""
  import keras  # pylint: disable=import-outside-toplevel
  from rgd import models  # pylint: disable=import-outside-toplevel
  d = tmp_path_factory.mktemp("exits")
  f = dict(dir=str(d), data=write_npz_dataset(str(d / "data"), num_train=20, num_test=10))
  os.makedirs(d / "baddata")
  for split in ("train", "test"):  # not npz archives at all
    (d / "baddata" / f"{split}.npz").write_bytes(b"not an npz archive")
  f["baddata"] = str(d / "baddata")
  os.makedirs(d / "run")
  f["run"] = str(d / "run")
  f["plain"] = str(d / "run" / "model.keras")
  keras.utils.set_random_seed(0)
  models.get_model("tiny_cnn", width=2).save(f["plain"])
  data = open(f["plain"], "rb").read()
  f["truncated"] = str(d / "truncated.keras")
  open(f["truncated"], "wb").write(data[:len(data) // 2])
  f["notkeras"] = str(d / "model.txt")
  open(f["notkeras"], "w").write("not a model")
  f["badnpy"] = str(d / "checkpoint.npy")
  open(f["badnpy"], "wb").write(b"\x93NUMPY garbage")
  os.makedirs(d / "empty")
  f["empty"] = str(d / "empty")
  return f


@pytest.fixture(autouse=True)
def _fresh_flags_and_gin():
  gin.clear_config()
  yield
  gin.clear_config()
  if flags.FLAGS.is_parsed():
    flags.FLAGS.unparse_flags()


def _last_line(err):
  lines = [line for line in err.splitlines() if line.strip()]
  return lines[-1] if lines else ""


def _check(capsys, status, code, prog, culprits):
  """The exit code is `status`; stderr ends in one line `prog: ...` naming every culprit."""
  err = capsys.readouterr().err
  assert code == status, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  line = _last_line(err)
  assert line.startswith(f"{prog}: ") or prog is None, err[-2000:]
  for culprit in culprits:
    assert culprit in line, (culprit, line)


def _run_in_process(main, prog, argv, absl_flags=True):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main, prog, argv=argv, absl_flags=absl_flags)
  return exit_info.value.code


# --- The mapping itself: every error of rgd.errors' table, absl's, and a bug. -------------------

MAPPING = [
    (errors.ConfigError("bad --x"), 2), (errors.DataError("f.npz: bad"), 2),
    (errors.SourceError("g.npz: bad"), 2), (errors.CheckpointError("ckpt-3: bad"), 2),
    (errors.StateMismatchError("state: other eps"), 2),
    (errors.NonFiniteLogitsError("NaN logits"), 2), (errors.NonFiniteError("step 7: NaN"), 3),
    (errors.TooManySkippedSteps("100 skipped"), 3), (app.UsageError("--y is required"), 2),
    (flags.IllegalFlagValueError("flag --z=q: bad"), 2),
]


@pytest.mark.parametrize("error,status", MAPPING, ids=lambda x: type(x).__name__)
def test_cli_run_maps_each_error_to_its_status_and_one_line(error, status, capsys):
  def main(argv):
    del argv
    raise error
  code = _run_in_process(main, "prog", ["prog"], absl_flags=False)
  _check(capsys, status, code, "prog", [str(error)])
  assert status == cli.status_of(error)


def test_a_bug_keeps_its_traceback_and_several_lines_become_one(capsys):
  def bug(argv):
    raise KeyError(argv[0])
  with pytest.raises(KeyError, match="x"):  # not swallowed: Python prints it, status 1
    cli.run(bug, "prog", argv=["x"], absl_flags=False)
  assert errors.exit_status(ValueError("plain")) is None

  def two_lines(argv):
    raise errors.StateMismatchError("differs:\n  eps: 0.03 vs 0.01\n  seed: 0 vs 1")
  code = _run_in_process(two_lines, "prog", [], absl_flags=False)
  err = capsys.readouterr().err
  assert code == 2 and err == "prog: differs:; eps: 0.03 vs 0.01; seed: 0 vs 1\n"


def test_done_is_status_0_and_mains_status_is_kept(capsys):
  assert _run_in_process(lambda argv: None, "prog", [], absl_flags=False) == 0
  assert _run_in_process(lambda argv: 1, "prog", [], absl_flags=False) == 1  # a failed check


# --- Entry points, in process: each kind of bad input. -----------------------------------------


def _entry(name):
  return importlib.import_module(f"rgd.{name}")


def _cases(f):
  plain, data, bad = f["plain"], f"--dataset=npz:{f['data']}", f"--dataset=npz:{f['baddata']}"
  nope = os.path.join(f["dir"], "nope")
  absent = os.path.join(f["dir"], "absent.keras")
  return {
      "evaluate": [
          ([f"--model_dir={nope}"], [f"--model_dir={nope}", "directory is missing"]),
          ([f"--model={absent}", data], [absent, "is missing"]),
          ([f"--model={f['truncated']}", data], [f["truncated"], "unreadable", "truncated"]),
          ([f"--model={f['notkeras']}", data], [f["notkeras"], "unreadable", "not a .keras"]),
          ([f"--model={plain}", data, "--eps=abc"], ["--eps='abc'", "not a number"]),
          ([f"--model={plain}", data, "--eps=2"], ["--eps='2'", "(0, 1]"]),
          ([f"--model={plain}", data, "--suite=foo"],
           ["--suite=foo", "aa+mt", "autoattack", "pgd40"]),
          ([f"--model={plain}", data, "--num_examples=0"], ["--num_examples=0"]),
          ([f"--model={plain}", data, "--norm=l3"], ["--norm=l3", "linf", "l2"]),
          ([f"--model={plain}", data, "--gin_bindings=nosuch.param = 1"],
           ["bad gin binding", "nosuch.param"]),
          ([f"--model={plain}", data, f"--gin_file={nope}.gin"], ["gin file not found", nope]),
          ([f"--model={plain}", bad, "--suite=pgd40"], [f"{f['baddata']}/test.npz"]),
          ([f"--model={plain}", data, "stray"], ["unexpected arguments", "stray"]),
      ],
      "certify": [
          ([f"--model={plain}", data], [plain, "not a certifiable model"]),
          ([f"--model_dir={f['run']}", data], [plain, "not a certifiable model"]),
          ([f"--model={f['truncated']}", data], [f["truncated"], "unreadable"]),
          ([f"--model_dir={nope}"], [nope, "directory is missing"]),
          ([f"--model={plain}", data, "--eps=abc"], ["--eps='abc'"]),
          ([f"--model={plain}", data, "--radii=0,x"], ["--radii='x'"]),
          ([f"--model={plain}", data, "--linf_bound=foo"], ["--linf_bound=foo"]),
      ],
      "convert": [
          ([f"--input={nope}.pt", f"--output={nope}"], [f"{nope}.pt", "no such file"]),
          ([f"--input={f['badnpy']}", f"--output={nope}"], [f["badnpy"], "not a .npy"]),
          ([f"--model={plain}", f"--output={nope}.safetensors"], [plain, "tiny_cnn", "wrn-D-W"]),
          ([f"--model={absent}", f"--output={nope}.pt"], [absent, "is missing"]),
          ([f"--input={nope}.pt"], ["--output is required"]),
          ([f"--input={nope}.pt", f"--output={nope}", "--activation=tanh"],
           ["--activation=tanh"]),
      ],
      "train": [
          (["--gin_file=gin/debug.gin"], ["--model_dir is required"]),
          ([f"--model_dir={nope}", f"--gin_file={nope}.gin"], ["gin file not found", nope]),
          ([f"--model_dir={nope}", "--gin_file=gin/debug.gin",
            "--gin_bindings=train_and_evaluate.no_such_arg=1"],
           ["bad gin binding", "no_such_arg"]),
          ([f"--model_dir={nope}", "--gin_file=gin/debug.gin", "--gin_bindings=get_model.width="],
           ["bad gin binding", "get_model.width="]),
      ],
      "train_generator": [
          (["--gin_file=gin/edm_debug.gin"], ["--model_dir is required"]),
          ([f"--model_dir={nope}", "--gin_file=gin/edm_debug.gin",
            "--gin_bindings=train_generator.no_such_arg=1"], ["bad gin binding", "no_such_arg"]),
      ],
      "train_corruption_net": [
          (["--gin_file=gin/edsr.gin"], ["--model_dir is required"]),
          ([f"--model_dir={nope}", "--gin_file=gin/edsr.gin",
            "--gin_bindings=train_corruption_net.no_such_arg=1"],
           ["bad gin binding", "no_such_arg"]),
      ],
  }


ENTRY_POINTS = ["evaluate", "certify", "convert", "train", "train_generator",
                "train_corruption_net"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_bad_inputs_in_process(name, files, capsys, monkeypatch):
  monkeypatch.chdir(ROOT)  # the gin files' relative paths
  module = _entry(name)
  for argv, culprits in _cases(files)[name]:
    code = _run_in_process(module.main, f"rgd.{name}", [f"rgd.{name}", *argv])
    try:
      _check(capsys, 2, code, f"rgd.{name}", culprits)
    except AssertionError as e:
      raise AssertionError(f"{name} {argv}: {e}") from e
    gin.clear_config()


def test_training_on_bad_data_exits_2_naming_the_file(files, capsys, monkeypatch):
  """A data set that is not npz: rgd.train and rgd.train_corruption_net stop before any step."""
  monkeypatch.chdir(ROOT)
  for name, gin_file in (("train", "gin/debug.gin"), ("train_corruption_net", "gin/edsr.gin")):
    model_dir = os.path.join(files["dir"], f"{name}_run")
    code = _run_in_process(_entry(name).main, f"rgd.{name}", [
        f"rgd.{name}", f"--model_dir={model_dir}", f"--gin_file={gin_file}",
        f"--gin_bindings=DATASET='npz:{files['baddata']}'"])
    _check(capsys, 2, code, f"rgd.{name}", [f"{files['baddata']}/train.npz"])
    gin.clear_config()


# --- Tools with an argparse main, in process. ---------------------------------------------------


def _tool(name):
  sys.path.insert(0, TOOLS)
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(TOOLS)


def test_argparse_tools_in_process(files, capsys):
  absent = os.path.join(files["dir"], "absent.keras")
  cases = [
      ("show_augmentations", [f"--dataset=npz:{files['data']}", "--augmentations=bogus",
                              f"--output={files['dir']}/grid.png"], ["'bogus'"]),
      ("show_augmentations", [f"--dataset=npz:{files['data']}", "--num_images=1",
                              f"--output={files['dir']}/grid.png"], ["--num_images"]),
      ("benchmark", ["benchmark.py", "nope"], ["expected one of"]),
      ("profile_step", ["summarize", f"--logdir={files['empty']}"], ["summarize"]),
      ("mt_vs_apgdt", [f"--model={absent}"], [absent, "is missing"]),
      ("mt_vs_apgdt", [f"--model={files['plain']}", "--norm=l3"], ["--norm", "l3"]),
  ]
  for name, argv, culprits in cases:
    code = _run_in_process(_tool(name).main, f"{name}.py", argv, absl_flags=False)
    try:
      _check(capsys, 2, code, None, culprits)
    except AssertionError as e:
      raise AssertionError(f"{name} {argv}: {e}") from e


@pytest.mark.parametrize("name,argv,culprits", [
    ("crosscheck_gloro", ["--seed_bug=bogus"], ["--seed_bug", "bogus"]),
    ("crosscheck_linf_torch", ["--seed_bug=bogus"], ["--seed_bug", "bogus"]),
    ("crosscheck_torch", ["--seed_bug=bogus"], ["--seed_bug", "bogus"]),
    ("bench_torch_trades", ["--steps=x"], ["--steps", "'x'"]),
    ("edm_torch_twin", ["--seed_bug=bogus"], ["--seed_bug", "bogus"]),
    ("lot_torch_twin", ["--seed_bug=bogus"], ["--seed_bug", "bogus"]),
    ("lot_reference_check", ["--reference_dir=/nonexistent"], ["--reference_dir",
                                                                "/nonexistent"]),
    ("crosscheck_autoattack", [], ["--model=FILE.keras or --train=KIND"]),
    ("digits_npz", [], ["--output_dir"]),
])
def test_argparse_tools_with_optional_dependencies(name, argv, culprits, capsys):
  needs = dict(crosscheck_gloro="gloro", crosscheck_autoattack="pyautoattack",
               digits_npz="sklearn").get(name, "torch")
  pytest.importorskip(needs)
  if name != "digits_npz":
    pytest.importorskip("torch")
  code = _run_in_process(_tool(name).main, f"{name}.py", argv, absl_flags=False)
  _check(capsys, 2, code, None, culprits)


# --- The real exit status: one subprocess per entry point and absl tool, run together. ---------


def _subprocess_cases(f):
  nope = os.path.join(f["dir"], "nope")
  m = lambda name: [sys.executable, "-m", f"rgd.{name}"]
  t = lambda name: [sys.executable, os.path.join(TOOLS, f"{name}.py")]
  return {
      "rgd.evaluate": (m("evaluate") + [f"--model={f['truncated']}",
                                        f"--dataset=npz:{f['data']}"],
                       [f["truncated"], "unreadable"]),
      "rgd.certify": (m("certify") + [f"--model={f['plain']}", f"--dataset=npz:{f['data']}"],
                      [f["plain"], "not a certifiable model"]),
      "rgd.convert": (m("convert") + [f"--input={nope}.pt", f"--output={nope}"],
                      [f"{nope}.pt", "no such file"]),
      "rgd.train": (m("train") + [f"--model_dir={nope}", "--gin_file=gin/debug.gin",
                                  "--gin_bindings=train_and_evaluate.no_such_arg=1"],
                    ["bad gin binding", "no_such_arg"]),
      "rgd.train_generator": (m("train_generator") + ["--gin_file=gin/edm_debug.gin"],
                              ["--model_dir is required"]),
      "rgd.train_corruption_net": (m("train_corruption_net") + [
          f"--model_dir={nope}", "--gin_file=gin/edsr.gin", "--gin_bindings=DATASET='npz:"
          f"{f['baddata']}'"], [f"{f['baddata']}/train.npz"]),
      # fid.py and complementarity.py import TensorFlow only after their flags are checked.
      "fid.py": (t("fid") + ["--num_generated=abc", "--generated=x"], ["--num_generated=abc"]),
      "complementarity.py": (t("complementarity") + ["--num_samples=abc", "--generated=x"],
                             ["--num_samples=abc"]),
      "deepaugment.py": (t("deepaugment") + ["--network=edsr_baseline_x4",
                                             f"--weights={nope}.npz", f"--output_dir={nope}"],
                         [f"{nope}.npz"]),
      "init_proxy.py": (t("init_proxy") + ["--steps=abc"], ["--steps=abc"]),
      # make_tfrecords.py: test_make_tfrecords.py::test_cli_error_names_the_file (a subprocess);
      # convert_corruption_net.py's in process: tests/test_corruptions_convert.py.
  }


@pytest.fixture(scope="module")
def subprocess_results(files):
  cases = _subprocess_cases(files)
  run = lambda cmd: subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True,
                                   timeout=300)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = dict(zip(cases, pool.map(run, [cmd for cmd, _ in cases.values()])))
  return {prog: (results[prog], culprits) for prog, (_, culprits) in cases.items()}


@pytest.mark.parametrize("prog", ["rgd.evaluate", "rgd.certify", "rgd.convert", "rgd.train",
                                  "rgd.train_generator", "rgd.train_corruption_net", "fid.py",
                                  "complementarity.py", "deepaugment.py", "init_proxy.py"])
def test_real_exit_status(prog, subprocess_results):
  result, culprits = subprocess_results[prog]
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  line = _last_line(result.stderr)
  assert line.startswith(f"{prog}: "), result.stderr[-3000:]
  for culprit in culprits:
    assert culprit in line, (culprit, line)
