"""A quiet start-up: no TensorFlow C++ log lines from mnist-serve commands unless verbose."""

import json
import os
import re
import subprocess
import sys

import pytest

from modelrepo.quiet import CPP_LOG_LINE, QUIET_ENV, VERBOSE_ENV, captured_stderr_fd
from tests.helpers import REPO

# What a user reads as a crash: C++ log lines, absl's notice, CUDA probing, TensorFlow sources.
CHATTER = re.compile(r"cuda|E0000|W0000|I0000|absl|tensorflow/", re.IGNORECASE)


def test_captured_stderr_drops_cpp_lines_and_keeps_the_rest(capfd: pytest.CaptureFixture) -> None:
    with captured_stderr_fd():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are ...\n")
        os.write(2, b"I0000 00:00:1796030346.973204   12251 port.cc:153] oneDNN custom ops\n")
        os.write(2, b"E0000 00:00:1796030350.961907   12251 cuda_platform.cc:52] cuInit: (303)\n")
        os.write(2, b"W1130 09:21:22.123456   12251 some_file.cc:7] a warning\n")
        os.write(2, b"UserWarning: a Python-level warning stays\n")
    err = capfd.readouterr().err
    assert err == "UserWarning: a Python-level warning stays\n"
    assert not CPP_LOG_LINE.match("Traceback (most recent call last):")


def mnist_serve(*args: str, verbose: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (*QUIET_ENV, VERBOSE_ENV)}
    env["PYTHONPATH"] = str(REPO)
    if verbose:
        env[VERBOSE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mnist_serve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.mark.slow
def test_a_command_importing_tensorflow_prints_no_cpp_log_lines() -> None:
    """`mnist-serve variants` builds every Keras model (TensorFlow imported, devices probed)."""
    quiet = mnist_serve("variants", "--json", verbose=False)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)[0]["parameters"] > 0
    assert not [line for line in quiet.stderr.splitlines() if CHATTER.search(line)], quiet.stderr
    # Verbose shows what TensorFlow prints on this machine, as a plain import does.
    plain = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices('GPU')"],
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not CHATTER.search(plain.stderr):
        pytest.skip("TensorFlow prints no start-up log lines on this machine")
    loud = mnist_serve("variants", "--json", verbose=True)
    assert loud.returncode == 0, loud.stderr
    assert CHATTER.search(loud.stderr), loud.stderr


def test_be_verbose_undoes_the_quiet_environment_in_process() -> None:
    script = (
        "import os, sys; import modelrepo.quiet as q; "
        "quiet = (os.environ['TF_CPP_MIN_LOG_LEVEL'], any(isinstance(f, q._QuietTensorFlowFinder) "
        "for f in sys.meta_path)); q.be_verbose(); "
        "print(quiet, os.environ.get('TF_CPP_MIN_LOG_LEVEL'), os.environ[q.VERBOSE_ENV], "
        "any(isinstance(f, q._QuietTensorFlowFinder) for f in sys.meta_path))"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*QUIET_ENV, VERBOSE_ENV)}
    env["PYTHONPATH"] = str(REPO)
    env["TF_CPP_MIN_LOG_LEVEL"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["('3',", "True)", "1", "1", "False"]
