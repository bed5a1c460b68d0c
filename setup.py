"""Installs vedgan: JAX/Flax latent-variable, adversarial and RL text generation."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.7",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    # TFDS is used without TensorFlow: builders write array_record files that
    # `tfds.data_source` reads with numpy only.
    "tensorflow-datasets>=4.9.7",
    "array_record>=0.5",
    "sentencepiece>=0.2",
    "ml_collections>=0.1.1",
    "chatterbot-corpus>=1.2",
    "chitchat-dataset>=0.9",    # the `chitchat` corpus (MIT, pure data; docs/data.md)
    "vaderSentiment>=3.3",      # its lexicon labels the embedded corpus for the demos
    "pyyaml>=6",
    "absl-py>=2",
    "numpy>=1.26",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboardX>=2.6",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-xdist>=3",
        "chex>=0.1.86",             # tests: tree/shape assertions, jit/no-jit variants
        "nltk>=3.8",
        "sacrebleu>=2.3",
        "scipy>=1.10",
        "nbclient>=0.10",           # tests/test_notebooks.py runs colab/*.ipynb
        "nbformat>=5.9",
        "ipykernel>=6.29",
    ],
    # benchmarks/ only: the PyTorch side of the side-by-side timings
    "bench": [
        "torch>=2.1",
    ],
}

setup(
    name="vedgan",
    version="0.1.0",
    description=("JAX/Flax reimplementation of latent-variable, adversarial and "
                 "reinforcement-learned text and dialogue generation papers."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vedgan", "vedgan.*", "configs"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
