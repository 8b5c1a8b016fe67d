"""Training: load MNIST, build the catalogued variants, train them and export SavedModels."""

import modelrepo  # noqa: F401  (quietens TensorFlow before any training module imports it)
