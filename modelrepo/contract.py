"""What every model takes and gives: the one home of the image size, classes and tensor names.

An image is ``SIDE`` x ``SIDE`` pixels (``PIXELS`` numbers when flat), one channel, float32 in
[0, 1]; a model answers ``CLASSES`` probabilities. Every exported SavedModel carries the serving
signature ``SIGNATURE``: float32 ``[None, *INPUT_SHAPE]`` in ``INPUT_NAME``, float32
``[None, CLASSES]`` out in ``OUTPUT_NAME``. ``INPUT_NAME`` is also the JSON key of one image in
the service's own API (``{"image": ...}``) and the input name of the TF Serving and KServe APIs.
"""

SIDE = 28
PIXELS = SIDE * SIDE
INPUT_SHAPE = (SIDE, SIDE, 1)
CLASSES = 10
SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# MNIST's test set: what every model's test accuracy in metadata.json is measured on.
TEST_SIZE = 10_000
