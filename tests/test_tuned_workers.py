"""``serve --tuned`` without ``--workers``: the worker count the tuned models agree on, or the
settings' with the reason said (the models' counts stubbed: this is the choice and its words;
tests/test_explore.py's ``tuned_server`` reads them from a real repository)."""

from __future__ import annotations

import pytest

import service.registry
from mnist_serve.cli.serve import with_tuned_workers
from service.settings import Settings


@pytest.mark.parametrize(
    ("counts", "workers", "said"),
    [
        ({2}, 2, ""),
        ({0}, 0, ""),
        ({None}, 3, "no model served has a tuned configuration (mnist-serve tune saves them): "
                    "serving with workers=3"),
        ({1, None}, 3, "the models' tuned worker counts differ (1, none): serving with workers=3"),
        ({0, 2}, 3, "the models' tuned worker counts differ (one per core, 2)"),
    ],
)  # fmt: skip
def test_the_tuned_worker_count_applies_only_when_every_model_agrees(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    counts: set[int | None],
    workers: int,
    said: str,
) -> None:
    monkeypatch.delenv("MNIST_SERVE_WORKERS", raising=False)
    monkeypatch.setattr(service.registry, "tuned_worker_counts", lambda settings: counts)
    chosen = with_tuned_workers(Settings(workers=3, tuned=True))
    assert chosen.workers == workers
    printed = " ".join(capsys.readouterr().out.split())
    assert said in printed and bool(printed) == bool(said), printed
