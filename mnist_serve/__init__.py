"""mnist-serve: train, serve and load-test MNIST CNN variants.

Importing it imports ``modelrepo``, which keeps TensorFlow's C++ start-up chatter off the
terminal (``modelrepo.quiet``; ``--verbose`` or ``MNIST_SERVE_VERBOSE=1`` shows it).
"""

import modelrepo  # noqa: F401  (quiet start-up, before anything imports TensorFlow)
from modelrepo.version import VERSION as __version__

__all__ = ["__version__"]
