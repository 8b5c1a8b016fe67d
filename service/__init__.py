"""Serving: a FastAPI app that serves every exported variant behind ``POST /predict/<variant>``."""

import modelrepo  # noqa: F401  (quietens TensorFlow before any service module imports it)
from modelrepo.version import VERSION as __version__

__all__ = ["__version__"]
