"""A PyTorch twin of an rgd Keras network and a plain PyTorch TRADES step (developer tools only;
rgd itself never imports torch).

`TorchTwin(keras_model)` walks the functional Keras graph and rebuilds it with torch ops on
copies of the Keras weights, so that one implementation serves every rgd architecture built
from these layers (WRN with or without BN offset, tiny_cnn). Details that differ between the
frameworks and are reproduced here on purpose:
  * TF's SAME padding is asymmetric for stride 2 (pad_total = (ceil(n/s)-1)*s + k - n, the extra
    pixel goes to the end), whereas torch's `padding=1` is symmetric; `_same_pad` pads explicitly.
  * Keras' BatchNorm updates the moving variance with the *biased* batch variance (as Haiku's
    hk.BatchNorm, jnp.var) and decay 0.99; torch's BN would use the unbiased one. The BN here is
    written out by hand: mean/var over N, H, W, moving <- 0.99 moving + 0.01 batch.
  * Keras' Normalization divides by max(sqrt(var), 1e-7).

`trades_step` is Zhang et al.'s TRADES (github.com/yaodongyu/TRADES, trades.py `trades_loss`)
written independently of rgd/training/objectives.py, with the two BatchNorm modes of rgd.training.objectives.Objective:
DeepMind's (attack and clean term with batch statistics, no update; only the adversarial pass
updates the moving averages) and Zhang et al.'s (`model.eval()` attack; clean and adversarial
passes both in train mode). `bugs` seeds known mistakes so that a cross-check can show it
catches them.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from rgd.errors import ConfigError

BUGS = ("none", "kl_direction", "wd_on_bn", "bn_momentum", "symmetric_pad", "no_nesterov",
        "attack_bn_update")


def _history(tensor):
  return tensor._keras_history.operation.name  # pylint: disable=protected-access


def _inputs(layer):
  node = layer._inbound_nodes[0]  # pylint: disable=protected-access
  return [_history(t) for t in node.input_tensors]


def _same_pad(x, kernel, stride, symmetric=False):
  """TF SAME padding of NCHW `x` (extra pixel at the end), or torch-style symmetric."""
  pads = []
  for size, k in zip(reversed(x.shape[2:]), reversed(kernel)):
    total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
    before = total // 2 if not symmetric else (total + 1) // 2
    pads += [before, total - before if not symmetric else before]
  return F.pad(x, pads)


class TorchTwin(torch.nn.Module):
  """The Keras functional `model` as a torch module (NHWC [0, 1] images in, logits out).

  `forward(x, bn)`: bn='eval' uses the moving statistics; 'batch' the batch statistics without
  touching the moving ones; 'train' the batch statistics and updates the moving ones.
  Parameters are named by the Keras variable path, so gradients can be matched by name.
  """

  def __init__(self, model, bugs=(), dtype=torch.float32, native_bn=False):
    """`native_bn`: torch's fused F.batch_norm (for benchmarks; its running variance is the
    unbiased one, so it is not used for the cross-check)."""
    super().__init__()
    self.bugs = set(bugs)
    self.native_bn = native_bn
    self.layout = torch.contiguous_format
    self.ops = []  # (name, kind, input names, config)
    self.params = torch.nn.ParameterDict()
    self.stats = {}
    self.consts = {}
    self.input_name = _history(model.inputs[0])
    self.output_name = _history(model.outputs[0])
    self.bn_eps = {}
    for layer in model.layers:
      kind = type(layer).__name__
      # rgd's fused BN has Keras BatchNormalization's variables and numbers (fused_bn.py).
      kind = {"FusedBatchNormalization": "BatchNormalization"}.get(kind, kind)
      if kind == "InputLayer":
        continue
      cfg = {}
      if kind == "Conv2D":
        if layer.use_bias or layer.dilation_rate != (1, 1) or layer.groups != 1:
          raise ConfigError(f"{layer.name}: only bias-free, undilated convs are supported")
        cfg = dict(stride=layer.strides[0], kernel=layer.kernel_size, padding=layer.padding)
      elif kind == "BatchNormalization":
        cfg = dict(eps=layer.epsilon, momentum=layer.momentum, center=layer.center,
                   scale=layer.scale)
        self.stats[layer.name] = [torch.tensor(np.asarray(layer.moving_mean), dtype=dtype),
                                  torch.tensor(np.asarray(layer.moving_variance), dtype=dtype)]
      elif kind == "Activation":
        cfg = dict(fn=layer.activation.__name__)
        if cfg["fn"] not in ("swish", "silu", "relu", "linear"):
          raise ConfigError(f"{layer.name}: activation {cfg['fn']} not supported")
      elif kind == "Normalization":
        std = np.maximum(np.sqrt(np.asarray(layer.variance)), 1e-7)
        self.consts[layer.name] = (torch.tensor(np.asarray(layer.mean), dtype=dtype).reshape(-1),
                                   torch.tensor(std, dtype=dtype).reshape(-1))
      elif kind not in ("Add", "GlobalAveragePooling2D", "Dense"):
        raise ConfigError(f"{layer.name}: layer type {kind} not supported by the torch twin")
      for v in layer.trainable_weights:
        self.params[self.key(v.path)] = torch.nn.Parameter(
            torch.tensor(np.asarray(v), dtype=dtype))
      self.ops.append((layer.name, kind, _inputs(layer), cfg))

  def move(self, device):
    """Moves parameters, BN statistics and constants to `device`."""
    self.to(device)
    self.stats = {k: [t.to(device) for t in v] for k, v in self.stats.items()}
    self.consts = {k: tuple(t.to(device) for t in v) for k, v in self.consts.items()}
    return self

  @staticmethod
  def key(path):
    return path.replace("/", "__")

  def p(self, layer, name):
    return self.params[self.key(f"{layer}/{name}")]

  def forward(self, x, bn="eval"):
    # NHWC -> NCHW. The permuted view is channels_last in memory (what GPUs want); CPU kernels
    # (BatchNorm above all) are several times slower on it, so a plain NCHW copy by default.
    values = {self.input_name: x.permute(0, 3, 1, 2).contiguous(memory_format=self.layout)}
    for name, kind, ins, cfg in self.ops:
      xs = [values[i] for i in ins]
      h = xs[0]
      if kind == "Normalization":
        mean, std = self.consts[name]
        h = (h - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
      elif kind == "Conv2D":
        w = self.p(name, "kernel").permute(3, 2, 0, 1)  # HWIO -> OIHW
        if cfg["padding"] == "same":
          h = _same_pad(h, cfg["kernel"], cfg["stride"], "symmetric_pad" in self.bugs)
        h = F.conv2d(h, w, stride=cfg["stride"])
      elif kind == "BatchNormalization":
        h = self._batch_norm(name, h, cfg, bn)
      elif kind == "Activation":
        h = {"swish": F.silu, "silu": F.silu, "relu": F.relu,
             "linear": lambda t: t}[cfg["fn"]](h)
      elif kind == "Add":
        h = sum(xs[1:], xs[0])
      elif kind == "GlobalAveragePooling2D":
        h = h.mean(dim=(2, 3))
      elif kind == "Dense":
        h = h.float() @ self.p(name, "kernel").float() + self.p(name, "bias").float()
      values[name] = h
    return values[self.output_name].float()

  def _batch_norm(self, name, h, cfg, bn):
    mean_v, var_v = self.stats[name]
    shape = (1, -1, 1, 1)
    if self.native_bn:
      gamma = self.p(name, "gamma") if cfg["scale"] else None
      beta = self.p(name, "beta") if cfg["center"] else None
      return F.batch_norm(h, mean_v, var_v, gamma, beta, training=bn != "eval",
                          momentum=1 - cfg["momentum"] if bn == "train" else 0.0, eps=cfg["eps"])
    if bn == "eval":
      mean, var = mean_v, var_v
    else:
      hf = h.float()
      mean = hf.mean(dim=(0, 2, 3))
      var = ((hf - mean.view(shape)) ** 2).mean(dim=(0, 2, 3))  # biased, as Keras and Haiku
      update = bn == "train" or "attack_bn_update" in self.bugs
      if update:
        # Keras: moving <- momentum * moving + (1 - momentum) * batch (decay 0.99).
        d = 0.9 if "bn_momentum" in self.bugs else cfg["momentum"]
        with torch.no_grad():
          mean_v.mul_(d).add_((1 - d) * mean.detach())
          var_v.mul_(d).add_((1 - d) * var.detach())
    out = (h - mean.view(shape).to(h.dtype)) * torch.rsqrt(var.view(shape) + cfg["eps"]).to(
        h.dtype)
    if cfg["scale"]:
      out = out * self.p(name, "gamma").view(shape).to(h.dtype)
    if cfg["center"]:
      out = out + self.p(name, "beta").view(shape).to(h.dtype)
    return out

  def moving_statistics(self):
    return {f"{n}/{s}": t for n, (m, v) in self.stats.items()
            for s, t in (("moving_mean", m), ("moving_variance", v))}

  def decayed(self):
    """The weight-decayed parameters: conv and dense kernels and biases, never BN scales or
    offsets (DeepMind's utils.weight_decay, rgd.training.trainer.decayed_variables); with the
    'wd_on_bn' bug every parameter."""
    return [p for k, p in self.params.items()
            if k.endswith(("kernel", "bias")) or "wd_on_bn" in self.bugs]


def kl_div(p_logits, q_logits):
  """Per-example KL(softmax(p) || softmax(q))."""
  log_p, log_q = F.log_softmax(p_logits, 1), F.log_softmax(q_logits, 1)
  return (log_p.exp() * (log_p - log_q)).sum(1)


def trades_attack(net, x, noise, bn, steps=10, eps=8 / 255, step_size=2 / 255, bugs=()):
  """Zhang et al.'s attack: x + noise, `steps` sign steps on KL(f(x) || f(x')), projected onto
  the Linf ball and [0, 1]. Attack BN mode `bn` ('batch': DeepMind's; 'eval': Zhang's)."""
  with torch.no_grad():
    target = net(x, bn=bn)
  x_adv = torch.clamp(torch.min(torch.max(x + noise, x - eps), x + eps), 0, 1).detach()
  for _ in range(steps):
    x_adv.requires_grad_(True)
    adv = net(x_adv, bn=bn)
    loss = (kl_div(adv, target) if "kl_direction" in bugs else kl_div(target, adv)).sum()
    grad, = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach() + step_size * torch.sign(grad)
    x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0, 1)
  return x_adv.detach()


def trades_step(net, optimizer, x, y_onehot, noise, beta=6.0, weight_decay=5e-4,
                batch_stats_attack=True, steps=10, eps=8 / 255, step_size=2 / 255, x_adv=None,
                forward=None):
  """One TRADES step on (x, y). Returns (loss, x_adv, {param name: gradient}). A given `x_adv`
  replaces the attack (to compare the update alone: see crosscheck_torch.py); `forward` is
  `net` or a compiled version of it."""
  bugs = net.bugs
  f = net if forward is None else forward  # a compiled module has no truth value
  attack_bn = "batch" if batch_stats_attack else "eval"
  if x_adv is None:
    x_adv = trades_attack(f, x, noise, attack_bn, steps, eps, step_size, bugs)
  optimizer.zero_grad()
  clean = f(x, bn="batch" if batch_stats_attack else "train")
  adv = f(x_adv, bn="train")
  ce = -(y_onehot * F.log_softmax(clean, 1)).sum(1)
  kl = kl_div(adv, clean) if "kl_direction" in bugs else kl_div(clean, adv)
  loss = (ce + beta * kl).mean()
  # Coupled L2 (0.5 * wd * ||w||^2 in the loss), as DeepMind's experiment and rgd.training.trainer.
  loss = loss + 0.5 * weight_decay * sum((p ** 2).sum() for p in net.decayed())
  loss.backward()
  grads = {k: p.grad for k, p in net.params.items()}
  optimizer.step()
  return float(loss.detach()), x_adv, grads


class NesterovSGD:
  """PyTorch's SGD(momentum, nesterov=True) update, written out (torch.optim imports
  torch._dynamo and with it triton, which crashes when TensorFlow is loaded first):
  b <- momentum * b + g;  w <- w - lr * (g + momentum * b). Keras' SGD(nesterov=True) keeps
  m = -lr * b and gives the same update. With the 'no_nesterov' bug: w <- w - lr * b."""

  def __init__(self, net, lr, momentum=0.9):
    self.params, self.lr, self.momentum = list(net.parameters()), lr, momentum
    self.nesterov = "no_nesterov" not in net.bugs
    self.buffers = [torch.zeros_like(p) for p in self.params]

  def zero_grad(self):
    for p in self.params:
      p.grad = None

  @torch.no_grad()
  def step(self):
    for p, b in zip(self.params, self.buffers):
      b.mul_(self.momentum).add_(p.grad)
      p.sub_(self.lr * (p.grad + self.momentum * b if self.nesterov else b))
