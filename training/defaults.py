"""The training recipe's defaults, in a module that imports nothing heavy, so that the command
line can show them without loading Keras: the reference recipe (Adadelta with the old Keras
settings, batch 128, 12 epochs) and the range a seed may take."""

from __future__ import annotations

DEFAULT_EPOCHS = 12
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_RHO = 0.95
DEFAULT_SEED = 1337
MAX_SEED = 2**32 - 1  # keras.utils.set_random_seed's (NumPy's) upper bound
