"""The corruption-network runs that tests/test_corruptions_train_net.py compares bit for bit, in
one process with one inter-op thread: with several, TF's CPU graph executor gives convolution
filter gradients that differ by an ulp between runs of one process (measured on this network),
which would hide what the tests check.

    python tests/corruption_net_check.py ROOT

ROOT/full: 6 steps uninterrupted; ROOT/cut: SIGTERM after step 3 (RGD_TERM_AT, a real signal
to this process), then the same call again; ROOT/damaged: a copy of full with ckpt-6's data
truncated and weights.npz removed, then the same call again. ROOT/histories.json: the logged
losses of every call.
"""
import json
import os
import shutil
import sys

import tensorflow as tf

tf.config.threading.set_inter_op_parallelism_threads(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import make_images  # pylint: disable=g-import-not-at-top,wrong-import-position
from rgd.corruptions import training as tcn  # pylint: disable=g-import-not-at-top

TINY = dict(network="edsr_cifar", network_kwargs={"num_blocks": 1, "features": 4},
            dataset=None, batch_size=8, num_steps=6, learning_rate=3e-3, log_every=1,
            checkpoint_every=2)


def train(model_dir):
  return tcn.train_corruption_net(model_dir, images=make_images(16, size=8)[0], **TINY)


def main(root):
  histories = {"full": train(os.path.join(root, "full"))}
  os.environ["RGD_TERM_AT"] = "3"
  histories["cut_first"] = train(os.path.join(root, "cut"))
  del os.environ["RGD_TERM_AT"]
  histories["cut_weights_after_first"] = os.path.exists(os.path.join(root, "cut",
                                                                     "weights.npz"))
  histories["cut_rest"] = train(os.path.join(root, "cut"))
  damaged = os.path.join(root, "damaged")
  shutil.copytree(os.path.join(root, "full"), damaged)
  data_file, = tf.io.gfile.glob(os.path.join(damaged, "checkpoints", "ckpt-6.data-*"))
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 3)
  os.remove(os.path.join(damaged, "weights.npz"))
  histories["damaged"] = train(damaged)
  with open(os.path.join(root, "histories.json"), "w") as f:
    json.dump(histories, f)


if __name__ == "__main__":
  main(sys.argv[1])
