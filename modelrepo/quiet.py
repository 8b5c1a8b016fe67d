"""A quiet start-up: TensorFlow's C++ log lines kept off the terminal unless verbose is asked for.

On a machine without a GPU, TensorFlow 2.21 prints, while it is imported, absl's "All log
messages before absl::InitializeLog() ..." and ``I0000 ... port.cc`` (oneDNN) and
``cudart_stub.cc`` (no CUDA driver) lines, then ``E0000 ... failed call to cuInit ... (303)`` when
it probes the GPU: it looks like a crash and is not. Two things silence it, both done on import
of this module (``modelrepo`` imports it first, so every command, the service, training and the
server subprocesses get it before TensorFlow is imported):

* the environment: ``TF_CPP_MIN_LOG_LEVEL=3`` (the cuInit error and every later C++ log line;
  the GPU itself stays visible: no ``CUDA_VISIBLE_DEVICES``), ``GRPC_VERBOSITY=ERROR``; server
  subprocesses inherit it. The
  Python-side loggers (``tensorflow``, ``absl``) are set to ERROR.
* the import-time lines ignore that level (absl prints them before its logging is set up), so
  the first ``import tensorflow`` runs with file descriptor 2 captured in a temporary file; the
  captured C++ log lines are dropped and everything else (a Python warning, a traceback's
  context) is written back to stderr. An import error still raises as usual.

``MNIST_SERVE_VERBOSE=1`` turns all of it off (a ``--verbose`` flag calls :func:`be_verbose`,
which sets it and undoes the rest in a process that already imported this module) and leaves the
environment as it is, so ``MNIST_SERVE_VERBOSE=1 TF_CPP_MIN_LOG_LEVEL=1`` gives TensorFlow's own
choice of detail.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType

VERBOSE_ENV = "MNIST_SERVE_VERBOSE"
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}
# C++ log lines (absl/glog format: severity, MMDD or 0000, time, thread, file:line]) and absl's
# notice that it is not initialized yet.
CPP_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    r"|^WARNING: All log messages before absl::InitializeLog\(\)"
    r"|^INFO: Created TensorFlow Lite XNNPACK delegate"
)


def verbose() -> bool:
    """Whether the user asked to see every library's log lines (MNIST_SERVE_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def captured_stderr_fd() -> Iterator[None]:
    """Run the block with file descriptor 2 in a temporary file; replay what isn't C++ chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not CPP_LOG_LINE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """:func:`captured_stderr_fd`, unless verbose: around a library call that prints to file
    descriptor 2 directly (LiteRT announcing its XNNPACK delegate)."""
    if verbose():
        yield
        return
    with captured_stderr_fd():
        yield


class _QuietLoader(importlib.abc.Loader):
    """Executes a module with :func:`captured_stderr_fd` around it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with captured_stderr_fd():
            self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual, once, and loads it with stderr's C++ lines captured."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # TensorFlow is loaded once; then the hook has no work
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_before: dict[str, str | None] = {}


def quieten() -> None:
    """Set the environment and the hook, unless verbose; idempotent."""
    if verbose():
        return
    for name in QUIET_ENV:
        _before.setdefault(name, os.environ.get(name))
    # Set, not defaulted: a level of 2 inherited from elsewhere lets the cuInit error through.
    # With MNIST_SERVE_VERBOSE=1 the environment is left alone.
    os.environ.update(QUIET_ENV)
    for logger in ("tensorflow", "absl", "h5py"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):  # absl-py comes with TensorFlow
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def be_verbose() -> None:
    """Undo :func:`quieten` for this process and its children (what ``--verbose`` calls).

    Sets MNIST_SERVE_VERBOSE=1 and puts the environment back as it was; it must run before
    TensorFlow is imported to show TensorFlow's import-time lines.
    """
    os.environ[VERBOSE_ENV] = "1"
    for name, value in _before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _before.clear()
    for logger in ("tensorflow", "absl", "h5py"):
        logging.getLogger(logger).setLevel(logging.NOTSET)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]


quieten()
