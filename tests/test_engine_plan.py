"""service.supervisor.plan_engine: how many processes serve, and what it says when an engine
that was asked for cannot apply (one worker serves alone, whatever --engine says)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from service.supervisor import plan_engine
from tests.helpers import run_server


@pytest.fixture(autouse=True)
def no_engine_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings below are the tests' alone, not the shell's."""
    for name in ("MNIST_SERVE_WORKERS", "MNIST_SERVE_ENGINE"):
        monkeypatch.delenv(name, raising=False)


def test_one_worker_asked_with_an_engine_says_the_engine_does_not_apply() -> None:
    plan = plan_engine(Settings(workers=1, engine="executor"))
    assert (plan.workers, plan.engine) == (1, "single")
    assert plan.note == (
        "one worker (workers=1): serving as a single process; --engine executor applies "
        "only with several workers (--workers N)"
    )


def test_one_usable_core_is_named_as_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.supervisor.usable_cores", lambda: 1)
    plan = plan_engine(Settings(engine="replicas"))
    assert plan.engine == "single" and plan.note.startswith("one worker (one usable core)")


@pytest.mark.parametrize(
    ("given", "engine"),
    [
        ({"workers": 1}, "single"),  # no engine named: nothing to say
        ({"workers": 2, "engine": "executor"}, "executor"),
        ({"workers": 2}, "hybrid"),
    ],
)
def test_nothing_is_said_when_the_plan_is_what_was_asked(
    given: dict[str, Any], engine: str
) -> None:
    plan = plan_engine(Settings.model_validate(given))
    assert plan.engine == engine and plan.note == ""


@pytest.mark.slow
def test_the_server_says_so_in_its_log_and_serves(models_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    args = ("--variants", "depthwise", "--runtimes", "onnx", "--workers", "1")
    with run_server(models_dir, log, *args, "--engine", "executor") as server:
        server.wait_ready()
        assert httpx.get(f"{server.url}/variants", timeout=10).status_code == 200
    said = log.read_text()
    assert "--engine executor applies only with several workers (--workers N)" in said, said
