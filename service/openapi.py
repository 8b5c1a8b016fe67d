"""What the API docs show of the inference routes: the request body's forms with examples
that get real answers from "Try it out", and every error status with what causes it."""

from __future__ import annotations

from typing import Any

from modelrepo.contract import INPUT_NAME, PIXELS, SIDE
from service.schemas import ErrorResponse

# A "1": a vertical stroke. Pasted into the docs' "Try it out", it gets a real answer.
EXAMPLE_IMAGE = [
    [1.0 if 4 <= r < 24 and 13 <= c < 15 else 0.0 for c in range(SIDE)] for r in range(SIDE)
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON or an undecodable image"),
        (404, "Unknown variant or runtime (the body lists the served model names)"),
        (413, "Body or image over the size limit"),
        (415, "Content-Type is not JSON, multipart, PNG or JPEG"),
        (422, "Wrong shape, values outside [0, 1], NaN, no ink, or too many images"),
        (503, "Still loading, failed to load, or the model's queue is full (see Retry-After)"),
    )
}
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    INPUT_NAME: {
                        "description": f"{SIDE}x{SIDE} nested list or {PIXELS} flat list, in [0, 1]"
                    },
                    "images": {"type": "array", "description": "several such images"},
                },
            },
            "examples": {
                "one image": {"value": {INPUT_NAME: EXAMPLE_IMAGE}},
                f"flat {PIXELS}": {"value": {INPUT_NAME: [0.0] * 300 + [1.0] * 184 + [0.0] * 300}},
            },
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}
