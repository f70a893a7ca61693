"""Flex Edge's packaging lives in pyproject.toml (PEP 621, setuptools). This file keeps the repository's agreed
layout and lets tools that still call `setup.py` (older pip, distro packagers) build the same project."""
from setuptools import setup

setup()
