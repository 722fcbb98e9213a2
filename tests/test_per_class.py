"""Per-class accuracy with class names (rgd.evaluation.per_class), by hand on small cases."""
import numpy as np
import pytest

from rgd.evaluation import per_class

LABELS = np.array([2, 0, 0, 2, 2, 1])
CLEAN = np.array([1, 1, 0, 1, 1, 0], bool)
ROBUST = np.array([0, 1, 0, 1, 0, 0], bool)


def test_rows_are_each_classs_fractions():
  rows = per_class.rows(LABELS, dict(clean=CLEAN, robust=ROBUST), ["cat", "dog", "emu"])
  assert rows == [
      dict(label=0, name="cat", examples=2, clean=0.5, robust=0.5),
      dict(label=1, name="dog", examples=1, clean=0.0, robust=0.0),
      dict(label=2, name="emu", examples=3, clean=1.0, robust=pytest.approx(1 / 3))]
  # Without names (or a label past them) a class is shown by its label.
  assert [r["name"] for r in per_class.rows(LABELS, dict(clean=CLEAN))] == ["0", "1", "2"]
  assert [r["name"] for r in per_class.rows(LABELS, dict(clean=CLEAN), ["a", "b"])] == [
      "a", "b", "2"]


def test_weakest_and_markdown():
  rows = per_class.rows(LABELS, dict(clean=CLEAN, robust=ROBUST), ["cat", "dog", "emu"])
  assert per_class.weakest(rows, "robust") == "dog 0.0%, emu 33.3%, cat 50.0%"
  assert per_class.weakest(rows, "clean", k=2) == "dog 0.0%, cat 50.0%"
  assert per_class.markdown(rows, ("clean", "robust")).splitlines() == [
      "| class | name | examples | clean | robust |", "|---|---|---|---|---|",
      "| 0 | cat | 2 | 50.00% | 50.00% |", "| 1 | dog | 1 | 0.00% | 0.00% |",
      "| 2 | emu | 3 | 100.00% | 33.33% |"]


def test_class_names_come_from_the_run_then_the_data_set(tmp_path):
  assert per_class.class_names({"class_names": ["x", "y"]}, "cifar10", 2) == ["x", "y"]
  assert per_class.class_names({}, "cifar10", 10)[:3] == ["airplane", "automobile", "bird"]
  assert per_class.class_names({}, "cifar100", 100)[-1] == "worm"
  assert per_class.class_names({}, "cifar10", 100) is None      # not this model's classes
  assert per_class.class_names({}, f"npz:{tmp_path}", 10) is None  # npz sets have no names
  # A TinyImageNet folder that cannot be read only loses the names, not the report.
  assert per_class.class_names({}, f"tiny_imagenet:{tmp_path / 'missing'}", 200) is None
