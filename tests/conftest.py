"""Shared fixtures: small data sets written in the real formats, tiny models."""
import os

# Keep the suite quiet and reproducible on CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
# One thread per OpenBLAS call (numpy, scipy; set before numpy loads; subprocesses inherit it).
# pytest.ini runs two test processes on the two cores, so a second thread per call only
# oversubscribes them and the threads spin against each other: tests/test_fid_inception.py's
# 2048-dimensional eigh took 11 s of CPU with two threads instead of 1.7 s with one (loaded box).
# TensorFlow's own thread pools are left as users get them: with TF_NUM_INTRAOP_THREADS=1 the
# golden digests of tests/test_golden_refactor.py change (the order of float reductions).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest

import rgd  # noqa: F401  before TensorFlow loads: the suite runs TF's CPU kernels as users get them


def pytest_configure(config):
  # Tests over the per-engineer time budget (they still run in CI); `-m "not slow"` skips them.
  config.addinivalue_line("markers", "slow: end-to-end or attack tests slower than ~10 s")


# The files that take longest (per-file sums of `--durations=0`, docs/testing.md "Time"), longest
# first. pytest-xdist's `--dist loadfile` hands out whole files in collection order
# (`--no-loadscope-reorder` in pytest.ini; its default order, most tests first, put these files
# -- one or two long tests each -- last and left one worker idle for minutes at the end), so
# these start first and the many short files fill in behind them. A new slow file belongs here.
LONGEST_FIRST = [
    "test_train_e2e.py", "test_multi_worker.py", "test_study.py", "test_recipes_datasets.py",
    "test_attacks_protocol.py", "test_exit_statuses.py", "test_augment.py",
    "test_train_generator.py", "test_corruptions_augmix.py", "test_certified_attacks_reference.py",
    "test_generated_demo.py", "test_sample_job.py", "test_init_checkpoint.py",
    "test_generative.py", "test_certified_soundness.py", "test_lot.py", "test_published_models.py",
    "test_evaluate_cifar10_1.py", "test_certify.py", "test_gfile.py", "test_quickstart.py",
    "test_corruptions_cifar10c.py", "test_skip_step.py", "test_data_sets.py",
    "test_attacks_linear.py", "test_corruptions_train_net.py", "test_crosscheck_torch.py", "test_lot_twin.py",
    "test_beam_pipeline.py", "test_attacks_cascade.py", "test_xla_attacks.py",
    "test_make_tfrecords.py",
]


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def make_images(n, num_classes=10, size=32, seed=0):
  """Class-dependent images so that a tiny model can learn something: each class has its own
  mean colour, plus noise. Returns (uint8 [n, size, size, 3], int64 [n])."""
  rng = np.random.RandomState(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  colours = rng.uniform(0.2, 0.8, (num_classes, 3))
  images = colours[labels][:, None, None, :] + rng.normal(0, 0.1, (n, size, size, 3))
  return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int64)


def write_npz_dataset(folder, num_train=96, num_test=32, num_classes=10, size=32, seed=0):
  os.makedirs(folder, exist_ok=True)
  x, y = make_images(num_train + num_test, num_classes, size, seed)
  np.savez(os.path.join(folder, "train.npz"), image=x[:num_train], label=y[:num_train])
  np.savez(os.path.join(folder, "test.npz"), image=x[num_train:], label=y[num_train:])
  return folder


def write_cifar10_1_pair(folder, n=12, seed=0):
  """A CIFAR-10.1 release folder (cifar10.1_v6_data.npy / _labels.npy) of n random images;
  returns (images, labels)."""
  rng = np.random.RandomState(seed)
  os.makedirs(folder, exist_ok=True)
  images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
  labels = rng.randint(0, 10, n).astype(np.int64)
  np.save(os.path.join(folder, "cifar10.1_v6_data.npy"), images)
  np.save(os.path.join(folder, "cifar10.1_v6_labels.npy"), labels)
  return images, labels


@pytest.fixture
def npz_dataset(tmp_path):
  """A tiny CIFAR-shaped data set in the `npz:DIR` layout; returns DIR."""
  return write_npz_dataset(str(tmp_path / "data"))


def run_main(main, prog, argv, absl_flags=True):
  """Runs an entry point's or tool's `main` in this process under its exit contract
  (rgd.cli.run), as `python -m PROG ARGS` would, and returns the exit status (0 for a normal
  end). absl's flags are unparsed and gin cleared afterwards, so the next test parses anew.
  Where a test needs the outputs of an entry point rather than its process (signals, the real
  exit status of a fresh interpreter: tests/test_exit_statuses.py), this saves the 5 s of CPU
  a process spends importing TensorFlow."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from rgd import cli  # pylint: disable=g-import-not-at-top
  try:
    with pytest.raises(SystemExit) as exit_info:
      cli.run(main, prog, argv=argv, absl_flags=absl_flags)
  finally:
    if flags.FLAGS.is_parsed():
      flags.FLAGS.unparse_flags()
    gin.clear_config()
  return exit_info.value.code or 0
