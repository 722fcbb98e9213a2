r"""Published PyTorch checkpoints in and out: `python -m rgd.convert`.

Import a DeepMind / RobustBench checkpoint (DMWideResNet or DMPreActResNet state dict, `.pt`,
`.safetensors`, or DeepMind's JAX-era `.npy` pickle read through a restricted unpickler) into
an rgd run directory (model.keras + model.json) that rgd.evaluate, rgd.certify and
`train_and_evaluate.init_checkpoint` read:

    python -m rgd.convert --input=cifar10_linf_wrn70-16_with.pt --output=runs/dm70 \
        --activation=swish --norm=linf --eps=8/255

Export an rgd WRN or DM PreAct-ResNet for PyTorch / RobustBench (`.pt` or `.safetensors`,
loaded by DMWideResNet(...).load_state_dict(strict=True); constructor arguments beside it in
`<stem>.torch.json`):

    python -m rgd.convert --model_dir=runs/wrn28 --output=runs/wrn28/model.safetensors

A file that is not a plain state dict (any other pickled object, unknown tensors, wrong shapes)
is refused with exit status 2 and a message naming it; nothing in it is executed.
docs/published_models.md has the details.
"""
from absl import flags

from rgd import cli, models
from rgd.errors import ConfigError
from rgd.evaluation.target import load_model, naming, parse_eps
from rgd.models import torch_format
from rgd.interop import published

FLAGS = flags.FLAGS
cli.define_model_flags()  # --model, --dataset, --eps, ...
cli.define_norm_flag()  # --norm
cli.define_io_flags()  # --input (import: .pt/.pth, .safetensors, .npy), --output
flags.DEFINE_enum("activation", "swish", torch_format.ACTIVATIONS, "The checkpoint's activation "
                  "(weights do not record it): DeepMind's robust models use Swish (= SiLU).")
flags.DEFINE_enum("normalization", None, sorted(models.NORMALIZATION), "Per-channel statistics "
                  "inside the model. Default: cifar100 for 100 classes, else cifar10.")
flags.DEFINE_bool("bn_offset", True, "Import into BatchNorms with offsets (beta); False needs "
                  "the checkpoint's BN biases to be zero.")


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.output:
    raise ConfigError("--output is required")
  if FLAGS.input:
    eps = parse_eps(FLAGS.eps) if FLAGS.eps else None
    _, info = published.import_checkpoint(
        FLAGS.input, FLAGS.output, FLAGS.activation, FLAGS.normalization, FLAGS.bn_offset,
        FLAGS.dataset, FLAGS.norm, eps)
    print(f"{FLAGS.input} -> {FLAGS.output}/model.keras ({info['architecture']}, "
          f"{info['activation']}, {info['normalization']})")
    return
  model, path, _ = load_model(FLAGS.model_dir, FLAGS.model)
  with naming(path):  # a model without a PyTorch twin: exit 2 naming the file
    args = published.export_checkpoint(model, FLAGS.output)
  print(f"{path} -> {FLAGS.output} ({args['cls']} depth {args['depth']} width "
        f"{args['width']}, {args['activation']})")


if __name__ == "__main__":
  cli.run(main, "rgd.convert")
