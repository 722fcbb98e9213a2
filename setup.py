"""rgd: robust training with generated data, in TensorFlow/Keras 3."""
import setuptools

setuptools.setup(
    name="rgd",
    version="0.1.0",
    description=("Adversarially robust image classifiers trained with generated data "
                 "(Gowal et al. 2021, Rebuffi et al. 2021) in Keras 3."),
    packages=setuptools.find_packages(include=["rgd", "rgd.*"]),
    python_requires=">=3.11",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        # tfds needs it to prepare any dataset (also the mock data used in the tests).
        "importlib_resources",
        "numpy",
        "gin-config>=0.5",
        "absl-py",
        # tf.summary.text/image need it, and users run `tensorboard --logdir`; TF no longer
        # installs it.
        "tensorboard",
        # PNG figures in reports (certified-radius distribution, CIFAR-10-C heat map): Agg
        # backend only, no display needed.
        "matplotlib",
        # DATASET='digits' (rgd/data/digits.py): the real handwritten digits ship inside its
        # wheel, so README's first command trains offline. Core, not an extra, because that
        # command is `pip install -e .`; with scipy it adds about 50 MB to TensorFlow's 600 MB.
        "scikit-learn",
    ],
    extras_require={
        # pytest-xdist: pytest.ini runs the suite in two processes (docs/testing.md); 3.8 added
        # --no-loadscope-reorder, which pytest.ini uses.
        "test": ["pytest>=7", "pytest-xdist>=3.8", "scipy"],
        # tools/make_tfrecords.py --runner=...: generated sets of 100M images on Dataflow, Flink
        # or Spark (docs/beam.md). Resolves with TF 2.21 (it pins protobuf < 7, TF takes >= 6.31).
        "beam": ["apache-beam>=2.77"],
        # `python -m rgd.convert`, tools/convert_corruption_net.py: reading PyTorch checkpoints
        # (torch.load(weights_only=True)) and safetensors files. Optional: rgd's core never
        # imports torch.
        "torch": ["torch", "safetensors"],
        # The cross-checks against reference code (tools/, tests): foolbox and ART attacks on
        # certified points, klasleino's GloRo, the reference AutoAttack, Hendrycks' corruption
        # functions (scikit-learn, for the small certified run's digits, is a core dependency).
        # docs/testing.md; torch
        # and robustbench (--no-deps) are installed apart, as .ci/run does.
        "crosscheck": ["safetensors", "foolbox", "adversarial-robustness-toolbox", "gloro",
                       "pyautoattack", "imagecorruptions-imaug"],
    },
)
