"""Packaging shim: the metadata is in pyproject.toml.

What pyproject.toml cannot say in its static tables: the repository's top-level
``configs/`` folder (the user's layout) is installed as the package ``vedgan.configs``,
so ``vedgan train --config seq2seq:demo`` works after a plain ``pip install``.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vedgan", "vedgan.*"]) + ["vedgan.configs"],
    package_dir={"vedgan.configs": "configs"},
)
