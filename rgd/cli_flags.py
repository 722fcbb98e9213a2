"""The flags every entry point shares (rgd.train, rgd.evaluate, rgd.certify,
rgd.train_corruption_net), defined once here so that those modules can be imported into one
process (tests, notebooks) without absl's duplicate-flag error. Flags live only in entry points
(STYLE.md); this module is imported by them alone."""
from absl import flags

flags.DEFINE_string("model_dir", None, "The run's directory: rgd.train writes checkpoints, "
                    "exports and events there; rgd.evaluate and rgd.certify read "
                    "DIR/model.keras and DIR/model.json.")
flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. \"train_and_evaluate."
                          "batch_size=128\", \"DATASET='npz:/data/cifar'\" or "
                          "\"aa_mt_suite.mt_restarts=20\".")
