"""mnist-serve: train, serve and load-test MNIST CNN variants.

Importing this package quietens TensorFlow's C++ start-up chatter (oneDNN and CUDA probing
notices) before any module imports TensorFlow; an explicit TF_CPP_MIN_LOG_LEVEL still wins.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
