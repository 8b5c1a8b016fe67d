"""Where models run (``service.device``), and TensorFlow loaded only where a SavedModel may be
served: a server of ONNX Runtime models alone never maps TensorFlow into any of its processes
(it starts in about a fifth of the time, with a fifth of the memory), and one that serves a
SavedModel does."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from modelrepo.contract import INPUT_NAME, SIDE
from service import device
from service.device import DeviceError
from tests.helpers import run_server


@pytest.mark.parametrize(
    ("runtimes", "expected"),
    [
        ([], True),  # every artifact present: a SavedModel too
        (["savedmodel"], True),
        (["onnx", "savedmodel"], True),
        (["onnx"], False),
        (["onnx", "litert", "openvino"], False),
    ],
)
def test_tensorflow_is_needed_only_for_a_savedmodel(runtimes: list[str], expected: bool) -> None:
    assert device.uses_tensorflow(runtimes) is expected


def test_light_runtimes_are_placed_without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tensorflow(*args: object) -> str:
        raise AssertionError("configure (TensorFlow) called for light runtimes")

    monkeypatch.setattr(device, "configure", no_tensorflow)
    monkeypatch.setattr(device, "gpu_present", lambda: False)
    assert device.place("auto", ["onnx"]) == "/CPU:0"
    assert device.place("cpu", ["litert"]) == "/CPU:0"
    with pytest.raises(DeviceError, match="sees no GPU"):
        device.place("gpu", ["onnx"])
    monkeypatch.setattr(device, "gpu_present", lambda: True)
    assert device.place("auto", ["onnx"]) == "/GPU:0"
    assert device.place("gpu", ["onnx"]) == "/GPU:0"
    assert device.place("cpu", ["onnx"]) == "/CPU:0"


def tensorflow_mapped(pid: int) -> list[int]:
    """The processes of the server ``pid`` (itself and every descendant) that have
    TensorFlow's library mapped."""
    top = psutil.Process(pid)
    return [
        p.pid
        for p in [top, *top.children(recursive=True)]
        if "tensorflow" in Path(f"/proc/{p.pid}/maps").read_text()
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (("--runtimes", "onnx", "--workers", "1"), False),
        (("--runtimes", "onnx", "--workers", "2"), False),  # front ends and executor alike
        (("--runtimes", "onnx,savedmodel", "--workers", "1"), True),  # the check can see it
    ],
    ids=["onnx-one-process", "onnx-two-workers", "with-a-savedmodel"],
)
def test_tensorflow_is_loaded_only_to_serve_a_savedmodel(
    models_dir: Path, tmp_path: Path, args: tuple[str, ...], loaded: bool
) -> None:
    with run_server(models_dir, tmp_path / "server.log", "--variants", "original", *args) as s:
        s.wait_ready()
        answer = httpx.post(
            f"{s.url}/predict/original@onnx", json={INPUT_NAME: [[0.0] * SIDE] * SIDE}
        )
        assert answer.status_code == 200, answer.text
        assert bool(tensorflow_mapped(s.process.pid)) is loaded
