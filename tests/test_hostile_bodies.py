"""A hostile client sending bodies to a real server: bad JSON, and every JSON body one edit
away from a valid one for each JSON API, is a clear 4xx or an answer (never a 5xx, no Python
reprs or machine paths); oversized bodies, chunked or not, get a 413 the client reads; and no
answer or docs page leaks a path of this machine or needs a CDN."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import httpx
import pytest

from modelrepo.contract import INPUT_NAME, PIXELS
from tests.helpers import Server
from tests.hostile_helpers import LEAKS, assert_clean, upload
from tests.hostile_helpers import hostile as hostile
from tests.hostile_helpers import hostile_run as hostile_run

pytestmark = pytest.mark.slow


def test_oversized_body_is_a_413_that_a_simple_client_reads(hostile: Server) -> None:
    """urllib writes its whole 12 MB body before reading: it must get the 413, not a reset."""
    request = urllib.request.Request(
        f"{hostile.url}/predict/depthwise",
        data=b"0" * 12_000_000,
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413


def test_a_chunked_multipart_upload_is_cut_off_at_the_limit(hostile: Server) -> None:
    """A 40 MB multipart upload with no Content-Length: 413, never spooled whole."""
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(40):
            yield b"\0" * 1_000_000

    response = httpx.post(
        f"{hostile.url}/predict/depthwise",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert_clean(response)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "bad_request"),
        (b"[" * 100_000, 400, "bad_request"),
        (b'{"image": "x"}', 422, "invalid_input"),
        (b'{"image": [NaN]}', 400, "bad_request"),
        (b'{"images": []}', 422, "invalid_input"),
    ],
    ids=["truncated", "deep", "string", "nan", "empty-list"],
)
def test_bad_json_is_4xx(hostile: Server, body: bytes, status: int, code: str) -> None:
    """Not JSON (NaN is not JSON; nesting deeper than the parser's limit): 400 bad_request.
    JSON that is not images: 422 invalid_input."""
    response = upload(hostile, body, "application/json")
    assert_clean(response)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text


# ---- every JSON body one edit away from a valid one, for each JSON API ---------------------

IMAGE_28 = [[[0.0]] * 28 for _ in range(28)]
V2_TENSOR = {"name": INPUT_NAME, "shape": [1, PIXELS], "datatype": "FP32"}
VALID = {  # (path, body, Inference-Header-Content-Length: the binary extension's JSON header)
    "predict": ("/predict/depthwise", {INPUT_NAME: [0.0] * PIXELS}, False),
    "tf-serving rows": ("/v1/models/depthwise:predict", {"instances": [IMAGE_28]}, False),
    "tf-serving columns": (
        "/v1/models/depthwise:predict",
        {"signature_name": "serving_default", "inputs": {INPUT_NAME: [IMAGE_28]}},
        False,
    ),
    "kserve json": (
        "/v2/models/depthwise/infer",
        {
            "id": "a",
            "inputs": [{**V2_TENSOR, "data": [0.0] * PIXELS}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": False},
        },
        False,
    ),
    "kserve binary": (
        "/v2/models/depthwise/infer",
        {"inputs": [{**V2_TENSOR, "parameters": {"binary_data_size": 4 * PIXELS}}]},
        True,
    ),
}
REPLACEMENTS: tuple[object, ...] = (
    None,
    True,
    "x",
    "",
    -1,
    0,
    1.5,
    1e300,
    2**70,
    [],
    [[]],
    [None],
    {},
    {"a": 1},
)


def one_edit_away(document: object) -> Iterator[object]:
    """``document`` with one value (the whole, or any value inside it, lists' first two
    elements) replaced by each of REPLACEMENTS."""
    yield from REPLACEMENTS
    children = (
        list(document.items())
        if isinstance(document, dict)
        else list(enumerate(document[:2]))
        if isinstance(document, list)
        else []
    )
    for key, child in children:
        for edited in one_edit_away(child):
            copy = dict(document) if isinstance(document, dict) else list(document)  # type: ignore[call-overload]
            copy[key] = edited
            yield copy


@pytest.mark.parametrize("api", list(VALID))
def test_every_body_one_edit_from_a_valid_one_gets_a_4xx_or_an_answer(
    hostile: Server, api: str
) -> None:
    """Hundreds of wrong shapes, types and values where each API expects something else: each
    answered 200 (still valid) or a clear 4xx, never a 5xx, nothing leaked."""
    path, valid, binary = VALID[api]
    wrong = []
    with httpx.Client(base_url=hostile.url, timeout=30) as client:
        for document in one_edit_away(valid):
            header = json.dumps(document).encode()
            response = client.post(
                path,
                content=header + (bytes(4 * PIXELS) if binary else b""),
                headers={"content-type": "application/json"}
                | ({"inference-header-content-length": str(len(header))} if binary else {}),
            )
            if response.status_code >= 500 or LEAKS.search(response.text):
                wrong.append(f"{response.status_code} {response.text[:100]} <- {header[:200]!r}")
    assert not wrong, f"{len(wrong)} bodies:\n" + "\n".join(wrong[:20])


def test_http_client_chunked_oversize(hostile: Server) -> None:
    """http.client, chunked, 10 MB of JSON: the 413 arrives."""
    host, port = hostile.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "POST",
        "/predict/depthwise",
        body=iter([b"0" * 1_000_000] * 10),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413


def test_answers_leak_no_machine_paths(hostile: Server) -> None:
    """/variants and /readyz: figures and model names, no paths of this machine."""
    for path in ("/variants", "/readyz", "/variants/depthwise"):
        text = httpx.get(f"{hostile.url}{path}").text
        assert not LEAKS.search(text), (path, text[:300])


def test_docs_load_offline(hostile: Server) -> None:
    """/docs and /redoc use scripts served by this server, not a CDN."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{hostile.url}{page}").text
        scripts = re.findall(r'src="([^"]+)"', html) + re.findall(r'href="([^"]+\.css)"', html)
        assert scripts and all(s.startswith("/") for s in scripts), scripts
        for src in scripts:
            assert httpx.get(f"{hostile.url}{src}").status_code == 200, src
