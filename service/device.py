"""Choose where the models run and configure TensorFlow's threads, before any model loads.

One process serves on one device. With several GPUs, run one process per GPU and select it
with ``CUDA_VISIBLE_DEVICES``: TensorFlow would otherwise reserve memory on every GPU it sees.

TensorFlow is imported only where a SavedModel may be served (:func:`place`): importing it
takes about 8 s and 500 MB here, and ONNX Runtime, LiteRT and OpenVINO need none of it.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Collection

log = logging.getLogger(__name__)

TENSORFLOW_RUNTIMES = frozenset({"savedmodel"})  # the runtimes that run on TensorFlow


class DeviceError(Exception):
    """The requested device is not available."""


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def gpu_wanted(device: str) -> bool:
    """Whether the ``--device`` setting puts models on a GPU of this machine, judged without
    TensorFlow (:func:`gpu_present`); DeviceError if it asks for one and there is none."""
    gpu = gpu_present()
    if device == "gpu" and not gpu:
        raise DeviceError(
            "device=gpu but this machine sees no GPU (no /dev/nvidia* device, or "
            "CUDA_VISIBLE_DEVICES hides it): check drivers and --gpus"
        )
    return gpu and device != "cpu"


def uses_tensorflow(runtimes: Collection[str]) -> bool:
    """Whether serving ``runtimes`` (``Settings.runtimes``; empty: every artifact present, so a
    SavedModel too) may need TensorFlow."""
    return not runtimes or bool(TENSORFLOW_RUNTIMES & set(runtimes))


def place(
    device: str, runtimes: Collection[str], intra_op_threads: int = 0, inter_op_threads: int = 0
) -> str:
    """The device name models run on (``/CPU:0`` or ``/GPU:0``): through TensorFlow
    (:func:`configure`) when ``runtimes`` may need it, else from the visible NVIDIA devices,
    without importing TensorFlow. DeviceError if ``device`` is ``gpu`` and there is none."""
    if uses_tensorflow(runtimes):
        return configure(device, intra_op_threads, inter_op_threads)
    if gpu_wanted(device):
        log.info("GPU found: light runtimes may run on it (ONNX Runtime with CUDA)")
        return "/GPU:0"
    log.info("running on CPU (device=%s; no TensorFlow: no SavedModel served)", device)
    return "/CPU:0"


def configure(device: str, intra_op_threads: int = 0, inter_op_threads: int = 0) -> str:
    """Set threads and GPU memory growth; return the TensorFlow device name to place models on.

    Must run before TensorFlow executes its first op (thread pools and GPU memory are fixed then);
    a second call in the same process keeps the first call's threads and says so.
    """
    import tensorflow as tf  # here: importing this module (DeviceError) must not load it

    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError as err:
        log.warning("TensorFlow threads already fixed in this process, kept as they are: %s", err)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or (device == "auto" and not gpus):
        if gpus:
            tf.config.set_visible_devices([], "GPU")  # keep TensorFlow off the GPU entirely
            log.info("device=cpu: running on CPU (%d GPU(s) left unused)", len(gpus))
        else:
            # The one plain line about the device (TensorFlow's own CUDA probing is quietened,
            # see modelrepo.quiet).
            log.info("no GPU found: running on CPU")
        return "/CPU:0"
    if not gpus:
        raise DeviceError("device=gpu but TensorFlow sees no GPU (check drivers and --gpus)")
    for gpu in gpus:
        # Grow allocations on demand instead of reserving the whole card at start-up.
        tf.config.experimental.set_memory_growth(gpu, True)
    log.info("GPU found: running on %s", describe("/GPU:0"))
    return "/GPU:0"


def describe(device: str) -> str:
    """A human name for the device: the GPU model (when TensorFlow is loaded), or the CPU."""
    if "tensorflow" not in sys.modules:  # no SavedModel here: no TensorFlow to ask the GPU's name
        return device
    import tensorflow as tf

    if device.startswith("/GPU"):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
            return f"{device} ({name})"
    return device
