"""Settings come from MNIST_SERVE_* variables and reject nonsense at construction."""

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_SERVE_VARIANTS", "original, depthwise")
    monkeypatch.setenv("MNIST_SERVE_PINS", "original=3")
    monkeypatch.setenv("MNIST_SERVE_MAX_BATCH_SIZE", "64")
    settings = Settings()
    assert settings.variants == ["original", "depthwise"]
    assert settings.pins == {"original": 3}
    assert settings.max_batch_size == 64


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", 70000, "port"),
        ("max_batch_size", 0, "max_batch_size"),
        ("device", "tpu", "device"),
        ("variants", ["../etc"], "invalid variant names"),
        ("pins", "original:3", "variant=version"),
        ("max_images_per_request", 64, "cannot exceed max_batch_size"),
        ("max_queue", 0, "max_queue"),
    ],
)
def test_invalid_values_fail_with_the_field_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({field: value})


def test_a_unicode_digit_version_is_not_a_version() -> None:
    """'²' passes str.isdigit but is not an int: it must mean 'no such version', not a crash."""
    from service.inference import url_version

    assert url_version("²") == -1 and url_version("3") == 3 and url_version(None) is None
