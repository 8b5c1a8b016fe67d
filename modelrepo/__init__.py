"""The model repository contract: its layout, model names and the runtimes that load artifacts.

The bottom layer: training writes through it, the service and the benchmarks read through it,
and it imports nothing of theirs. Importing it quietens TensorFlow's C++ start-up chatter
(oneDNN and CUDA probing notices, the cuInit error) before any module imports TensorFlow,
unless MNIST_SERVE_VERBOSE=1 (modelrepo.quiet).
"""

from modelrepo import quiet as quiet
