"""The service's errors: each class carries its HTTP status and a stable error code.

Handlers raise these; one exception handler in ``service.app`` turns them into JSON
``{"error": code, "detail": message, ...}`` responses, so every 4xx says what is wrong.
"""

from __future__ import annotations

from typing import Any

INTERNAL_DETAIL = "the server failed on this request"  # a bug's 500, whatever the API


class ServeError(Exception):
    """Base class: an error with an HTTP status, a code and a message for the client."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, for example)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        return {"error": self.code, "detail": self.detail, **self.extra}


class BadRequest(ServeError):
    """The body could not be parsed at all (malformed JSON, undecodable image)."""

    status = 400
    code = "bad_request"


class InvalidInput(ServeError):
    """The body parsed but does not describe valid images (shape, range, NaN, no ink)."""

    status = 422
    code = "invalid_input"


class UnknownModel(ServeError):
    """No such variant, or that runtime is not served for it (the body lists the names)."""

    status = 404
    code = "unknown_model"


class NotFound(ServeError):
    """Nothing of that name (a report, say)."""

    status = 404
    code = "not_found"


class RequestTimeout(ServeError):
    """The client stopped sending its body part-way (slow or stalled upload)."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ServeError):
    """The body or the image is over the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServeError):
    """The Content-Type, or the picture's format, is not one the service accepts."""

    status = 415
    code = "unsupported_media_type"


class ClientGone(ServeError):
    """The client disconnected before its answer was ready: counted as 499 (nginx's code)."""

    status = 499
    code = "client_closed_request"


class Unavailable(ServeError):
    """The service cannot take the request now (not ready, or the queue is full)."""

    status = 503
    code = "unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Tell well-behaved clients when to come back."""
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(Unavailable):
    """The variant's queue is full: back off instead of queueing without limit."""

    code = "overloaded"


class ModelNotLoaded(Unavailable):
    """The model failed to load (not "still loading"): it will not serve until restarted."""

    code = "model_not_loaded"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after_s=60)


class ModelFailure(ServeError):
    """The model call itself failed; the client gets an opaque message, the log the traceback."""

    status = 500
    code = "model_failure"
