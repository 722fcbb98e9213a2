"""Writes a PNG grid: one row per augmentation, applied to the same real training images.

Row 1 holds the original images, row 2 the baseline pad-crop-flip, then one row per
augmentation of rgd.augment applied to the originals (so the effect of each op is visible on its
own). Mixing ops (CutMix, MixUp, RICAP) draw their partners from the images shown.

  python tools/show_augmentations.py --dataset=npz:/path/to/dir --output=/tmp/augment.png
  python tools/show_augmentations.py --dataset=cifar10 --output=/tmp/augment.png \
      --augmentations=cutout,cutmix,mixup --num_images=12 --scale=3
"""
import argparse

import numpy as np
import tensorflow as tf

from rgd import augment, cli
from rgd.data import datasets
from rgd.errors import ConfigError
from rgd.runtime import fileio
from rgd.augment import visualize

DEFAULT_AUGMENTATIONS = ",".join(augment.AUGMENTATIONS)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="cifar10", help="tfds name or npz:DIR")
  p.add_argument("--split", default="train")
  p.add_argument("--output", required=True, help="PNG file to write")
  p.add_argument("--augmentations", default=DEFAULT_AUGMENTATIONS,
                 help="comma-separated names of rgd.augment.make_batch_augment")
  p.add_argument("--num_images", type=int, default=8)
  p.add_argument("--scale", type=int, default=2, help="upscaling factor of each image")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def augmentation_rows(images, labels, num_classes, names, seed):
  """float32 [len(names) + 2, n, H, W, 3]: originals, pad-crop-flip, then each augmentation."""
  x = datasets.to_float(images)
  batch = {"image": x, "label": datasets.soft_labels(labels, num_classes),
           "is_real": tf.ones([len(images)], tf.bool)}
  rows = [x, datasets.to_float(datasets.pad_crop_flip(images, tf.constant([seed, 0])))]
  for i, name in enumerate(names):
    fn = augment.make_batch_augment(name)
    rows.append(x if fn is None else fn(batch, tf.constant([seed, i + 1]))["image"])
  return tf.stack(rows)


def main(argv):
  args = parse_args(argv)
  names = [n.strip() for n in args.augmentations.split(",") if n.strip()]
  for name in names:
    augment.make_batch_augment(name)  # fails early, naming the bad augmentation
  if args.num_images < 2:
    raise ConfigError("--num_images must be at least 2 (mixing ops need partners)")
  images, labels = datasets.load_split(args.dataset, args.split, num_validation=0)
  if len(images) < args.num_images:
    raise ConfigError(f"{args.dataset}/{args.split} has {len(images)} images, fewer than "
                      f"--num_images={args.num_images}")
  pick = np.random.RandomState(args.seed).choice(len(images), args.num_images, replace=False)
  num_classes = datasets.num_classes_of(args.dataset)
  rows = augmentation_rows(images[pick], labels[pick], num_classes, names, args.seed)
  grid = visualize.image_grid(rows, scale=args.scale)
  fileio.atomic_write_bytes(args.output, tf.io.encode_png(grid[0]).numpy())
  print(f"Wrote {args.output}: rows = original, pad_crop_flip, {', '.join(names)}; "
        f"{grid.shape[2]}x{grid.shape[1]} px")


if __name__ == "__main__":
  cli.run(main, "show_augmentations.py", absl_flags=False)
