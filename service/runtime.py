"""Model runtimes: load one exported version and run batches through it.

A runtime is anything with ``predict(images) -> probabilities``; :data:`RUNTIMES` maps a
runtime name to its class, so a TFLite runtime can later sit beside the SavedModel one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from modelrepo.layout import INPUT_NAME, OUTPUT_NAME, SIGNATURE, ModelVersion


class Runtime(Protocol):
    """What the batcher needs of a loaded model."""

    variant: str
    version: int
    device: str

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 28, 28, 1) in [0, 1] -> float32 (N, 10) probabilities."""
        ...


@dataclass
class SavedModelRuntime:
    """Calls the SavedModel's ``serving_default`` signature directly (never ``model.predict``)."""

    variant: str
    version: int
    device: str
    _fn: Any = field(repr=False)
    _loaded: Any = field(repr=False)  # the signature needs its object graph kept alive

    @classmethod
    def load(cls, model: ModelVersion, device: str) -> SavedModelRuntime:
        """Load ``model`` onto ``device``; its signature must map ``image`` to ``probabilities``."""
        with tf.device(device):
            loaded = tf.saved_model.load(str(model.path))
        fn = loaded.signatures.get(SIGNATURE)
        if fn is None:
            raise ValueError(f"{model.path} has no {SIGNATURE!r} signature")
        inputs = fn.structured_input_signature[1]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in fn.structured_outputs:
            raise ValueError(
                f"{model.path}: signature takes {sorted(inputs)} and gives "
                f"{sorted(fn.structured_outputs)}; expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
            )
        return cls(model.variant, model.version, device, fn, loaded)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run one batch; called from the batcher's worker thread, never the event loop."""
        with tf.device(self.device):
            outputs = self._fn(**{INPUT_NAME: tf.constant(images)})
        return np.asarray(outputs[OUTPUT_NAME])


RUNTIMES: dict[str, type[SavedModelRuntime]] = {"savedmodel": SavedModelRuntime}
