"""Published checkpoints in and out: DeepMind's / RobustBench's DMWideResNet and
DMPreActResNet against rgd's converted models, side by side; exports that PyTorch loads with
strict=True; files that are not plain state dicts refused without running anything."""
import glob
import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from rgd import models
from rgd.errors import DataError
from rgd.evaluation import target
from rgd.models import torch_format
from rgd.interop import published, weight_files
from conftest import run_main

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RB = glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "robustbench",
                             "model_zoo", "architectures", "dm_wide_resnet.py"))


def _robustbench_module():
  """robustbench's dm_wide_resnet.py by path: its package __init__ needs timm and more."""
  if not _RB:
    pytest.skip("robustbench's architecture files are not installed")
  spec = importlib.util.spec_from_file_location("rb_dm_wide_resnet", _RB[0])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _random_torch_net(cls, seed, bn_offset=True, **kw):
  """A torch net in eval mode whose BN statistics, scales and (optionally) offsets are random,
  so that every tensor the conversion maps changes the logits."""
  torch.manual_seed(seed)
  net = cls(**kw).eval()
  with torch.no_grad():
    for mod in net.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.uniform_(0.5, 1.5)
        mod.running_mean.uniform_(-0.2, 0.2)
        mod.running_var.uniform_(0.5, 1.5)
        if bn_offset:
          mod.bias.uniform_(-0.2, 0.2)
        else:
          mod.bias.zero_()
    net.logits.weight.normal_(0, 1)
  return net


def _torch_logits(net, x):
  with torch.no_grad():
    return net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


# (class, kwargs, rgd activation, bn_offset, normalization); the activation class is looked up
# in robustbench's module. WRN-28-10 is the slow one.
CASES = [
    ("DMWideResNet", dict(depth=10, width=1), "Swish", "swish", True, "cifar10"),
    ("DMWideResNet", dict(depth=16, width=2, num_classes=100), "ReLU", "relu", False, "cifar100"),
    ("DMWideResNet", dict(depth=10, width=2), "SiLU", "silu", True, "cifar10"),
    ("DMPreActResNet", dict(depth=18), "Swish", "swish", True, "cifar10"),
    pytest.param("DMWideResNet", dict(depth=28, width=10), "Swish", "swish", True, "cifar10",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cls,kw,act,activation,bn_offset,normalization", CASES)
def test_import_gives_robustbench_logits(cls, kw, act, activation, bn_offset, normalization):
  rb = _robustbench_module()
  act_fn = getattr(torch.nn, act) if act in ("ReLU", "SiLU") else rb.Swish
  kw = dict(kw)
  if normalization == "cifar100":
    kw.update(mean=rb.CIFAR100_MEAN, std=rb.CIFAR100_STD)
  net = _random_torch_net(getattr(rb, cls), 0, bn_offset, activation_fn=act_fn, **kw)
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  arch = torch_format.infer_architecture(state)
  if cls == "DMWideResNet" and kw["depth"] == 28:
    assert net_params(net) == 36_479_194  # rgd's WRN-28-10 count (tests/test_models.py)
  model = torch_format.build_model(arch, activation, normalization, bn_offset)
  torch_format.load_state_dict(model, state)
  x = np.random.RandomState(1).rand(4, 32, 32, 3).astype(np.float32)
  want = _torch_logits(net, x)
  got = model(x, training=False).numpy()
  # float32 tolerance: the two frameworks sum the convolutions in different orders.
  scale = max(1.0, float(np.abs(want).max()))
  assert np.abs(got - want).max() <= 2e-5 * scale, (np.abs(got - want).max(), scale)
  assert np.abs(want).max() > 0.1  # the logits are not trivially zero


def net_params(net):
  return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name,bn_offset", [
    ("wrn-10-2", True), ("wrn-10-1", False),
    pytest.param("dm_preact_resnet18", True, marks=pytest.mark.slow)])
def test_export_loads_strict_and_round_trips(name, bn_offset, tmp_path):
  rb = _robustbench_module()
  model = models.get_model(name, bn_offset=bn_offset)
  rng = np.random.RandomState(0)
  model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                     if "moving_variance" in v.path or "gamma" in v.path
                     else w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                     for w, v in zip(model.get_weights(), model.weights)])
  args = torch_format.torch_constructor_args(model)
  act = rb.Swish if args["activation"] == "swish" else torch.nn.ReLU
  net = getattr(rb, args["cls"])(num_classes=args["num_classes"], depth=args["depth"],
                                 width=args["width"], activation_fn=act).eval()
  for suffix in (".pt", ".safetensors"):
    path = str(tmp_path / f"model{suffix}")
    published.export_checkpoint(model, path)
    state = weight_files.read_state_dict(path)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    x = rng.rand(3, 32, 32, 3).astype(np.float32)
    want = model(x, training=False).numpy()
    assert np.abs(_torch_logits(net, x) - want).max() <= 2e-5 * max(1, np.abs(want).max())
    back = models.get_model(name, bn_offset=bn_offset)
    torch_format.load_state_dict(back, state)
    for a, b in zip(model.get_weights(), back.get_weights()):
      np.testing.assert_array_equal(a, b)  # import(export(model)) is the identity


class _Payload:
  """Would write a file if unpickled: the refusal test checks that it never runs."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def _convert(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "rgd.convert", *args], capture_output=True,
                        text=True, env=env, timeout=120, check=False)


def _evil_files(tmp_path, marker):
  pt = tmp_path / "evil.pt"
  torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, str(pt))
  npy = tmp_path / "evil.npy"
  np.save(str(npy), np.array({"w": _Payload(str(marker))}, dtype=object), allow_pickle=True)
  return pt, npy


def test_pickled_objects_are_refused_without_running(tmp_path):
  marker = tmp_path / "executed"
  for path in _evil_files(tmp_path, marker):
    with pytest.raises(DataError, match=f"{path}: refused"):
      weight_files.read_state_dict(str(path))
  assert not marker.exists()


@pytest.mark.slow
def test_convert_exits_2_on_a_pickled_object(tmp_path, capsys):
  """The real process for the .pt file (its exit status); rgd.convert's main under the same
  exit contract (rgd.cli.run, absl flags) in this process for the .npy file."""
  from rgd import convert  # pylint: disable=g-import-not-at-top
  marker = tmp_path / "executed"
  pt, npy = _evil_files(tmp_path, marker)
  result = _convert(f"--input={pt}", f"--output={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert f"{pt}: refused" in result.stderr and "Traceback" not in result.stderr
  capsys.readouterr()
  code = run_main(convert.main, "rgd.convert",
                  ["rgd.convert", f"--input={npy}", f"--output={tmp_path / 'out'}"])
  err = capsys.readouterr().err
  assert code == 2, err[-2000:]
  assert f"rgd.convert: {npy}: refused" in err and "Traceback" not in err
  assert not marker.exists()
  assert not (tmp_path / "out" / "model.keras").exists()


def test_npy_unpickler_admits_arrays_and_mappings(tmp_path):
  tree = {"params": {"conv": {"w": np.arange(6.0).reshape(2, 3)}}, "step": np.int64(3)}
  path = str(tmp_path / "jax.npy")
  np.save(path, np.array(tree, dtype=object), allow_pickle=True)
  flat = weight_files.read_npy(path)
  np.testing.assert_array_equal(flat["params/conv/w"], tree["params"]["conv"]["w"])
  assert int(flat["step"]) == 3


def test_import_writes_a_run_that_evaluation_reads(tmp_path):
  """import_checkpoint: model.keras (plain Keras layers) + model.json with the file's sha256 and
  the threat model, which rgd.evaluate's defaults read; a Haiku tree is named, not guessed."""
  rb = _robustbench_module()
  net = _random_torch_net(rb.DMWideResNet, 3, depth=10, width=1, activation_fn=rb.Swish)
  path = str(tmp_path / "rb.pt")
  torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
  model, info = published.import_checkpoint(path, str(tmp_path / "run"), norm="linf",
                                            eps=8 / 255)
  assert info["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
  assert (info["architecture"], info["dataset"], info["norm"]) == ("wrn-10-1", "cifar10", "linf")
  loaded, _, _ = target.load_model(str(tmp_path / "run"))
  assert target.resolve_target(target.run_defaults(str(tmp_path / "run")))[:3] == (
      "cifar10", "linf", 8 / 255)
  x = np.random.RandomState(2).rand(2, 32, 32, 3).astype(np.float32)
  want = _torch_logits(net, x)
  assert np.abs(loaded(x, training=False).numpy() - want).max() <= 2e-5 * np.abs(want).max()
  jax = str(tmp_path / "jax.npy")
  np.save(jax, np.array({"wide_res_net/~/init_conv": {"w": np.zeros((3, 3, 3, 16))}},
                        dtype=object), allow_pickle=True)
  with pytest.raises(DataError, match=r"jax\.npy: a JAX/Haiku parameter tree"):
    published.import_checkpoint(jax, str(tmp_path / "jax_run"))


def test_architectures_without_a_deepmind_twin_are_refused(tmp_path):
  # He et al.'s PreAct-ResNet-18: 1x1 shortcut of the activated input, not DeepMind's 3x3.
  with pytest.raises(ValueError, match="preact_resnet18.: only .*DeepMind PyTorch twin"):
    published.export_checkpoint(models.get_model("preact_resnet18"), str(tmp_path / "x.pt"))
  assert not os.path.exists(tmp_path / "x.pt")
  state = torch_format.export_state_dict(models.get_model("wrn-10-1"))
  state["layer.0.block.0.conv_0.weight"] = state["layer.0.block.0.conv_0.weight"][:8]
  with pytest.raises(DataError, match=r"f\.pt: 'layer\.0\.block\.0\.conv_0\.weight' has shape"):
    torch_format.load_state_dict(models.get_model("wrn-10-1"), state, source="f.pt")
  state = torch_format.export_state_dict(models.get_model("wrn-10-1"))
  state["extra.weight"] = np.zeros(3)
  with pytest.raises(DataError, match=r"not used by wrn10_1: \['extra\.weight'\]"):
    torch_format.load_state_dict(models.get_model("wrn-10-1"), state, source="f.pt")
