"""Serving: a FastAPI app that serves every exported variant behind ``POST /predict/<variant>``."""

from importlib.metadata import version

import modelrepo  # noqa: F401  (quietens TensorFlow before any service module imports it)

__version__ = version("mnist-serve")
