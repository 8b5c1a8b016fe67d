"""The model repository contract: its layout, model names and the runtimes that load artifacts.

The bottom layer: training writes through it, the service and the benchmarks read through it,
and it imports nothing of theirs. Importing it quietens TensorFlow's C++ start-up chatter
(oneDNN and CUDA probing notices) before any module imports TensorFlow; an explicit
TF_CPP_MIN_LOG_LEVEL still wins.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
