"""Serving: a FastAPI app that serves every exported variant behind ``POST /predict/<variant>``."""

import mnist_serve  # noqa: F401  (quietens TensorFlow before any service module imports it)
