"""``mnist-serve models list|load|unload``: a running server's model repository, changed live.

The same actions as the KServe V2 repository API (``POST /v2/repository/index`` and
``/v2/repository/models/<name>/load|unload``), which these commands call.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mnist_serve.cli.options import console

app = typer.Typer(
    help="A running server's models: list them with their version and state, load or "
    "unload one without a restart (the KServe V2 repository API).",
    no_args_is_help=True,
)
UrlOption = Annotated[str, typer.Option("--url", help="The server (mnist-serve serve) to act on.")]
NameArgument = Annotated[
    str, typer.Argument(help="A variant (depthwise) or model (depthwise@onnx): its variant.")
]


def call(url: str, path: str) -> Any:
    """POST to the server; its JSON answer, or a clear error and exit 1."""
    import httpx

    try:
        answer = httpx.post(f"{url.rstrip('/')}{path}", timeout=120)
    except httpx.HTTPError as err:
        console.print(f"[red]cannot reach {url}:[/] {err}")
        raise typer.Exit(1) from err
    try:
        body = answer.json()
    except ValueError as err:  # not JSON: not mnist-serve's repository API (a proxy's page?)
        said = f"not a JSON answer: {answer.text[:200]!r}"
        console.print(f"[red]{answer.status_code} from {url}{path}:[/] {said}")
        raise typer.Exit(1) from err
    if answer.status_code != 200 or not isinstance(body, list | dict):
        error = body.get("error", body) if isinstance(body, dict) else body
        console.print(f"[red]{answer.status_code} from {url}{path}:[/] {error}")
        raise typer.Exit(1)
    return body


@app.command("list")
def list_models(url: UrlOption = "http://127.0.0.1:8000") -> None:
    """Every served model with its version and state (READY, LOADING, UNAVAILABLE: why)."""
    from rich.table import Table

    table = Table(title=f"Models of {url}")
    for column in ("model", "version", "state", "reason"):
        table.add_column(column)
    index = call(url, "/v2/repository/index")
    try:
        rows = [(e["name"], e["version"], e["state"], e["reason"]) for e in index]
    except (KeyError, TypeError) as err:  # a 200 of another shape: another server
        console.print(f"[red]{url} answered an index of another shape:[/] {index!r:.300}")
        raise typer.Exit(1) from err
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)


@app.command("load")
def load(name: NameArgument, url: UrlOption = "http://127.0.0.1:8000") -> None:
    """Serve a variant again (its pinned or latest complete version), loaded and warmed."""
    call(url, f"/v2/repository/models/{name}/load")
    console.print(f"{name}: loaded")


@app.command("unload")
def unload(name: NameArgument, url: UrlOption = "http://127.0.0.1:8000") -> None:
    """Stop serving a variant once its requests in flight are done (sticky until `load`)."""
    call(url, f"/v2/repository/models/{name}/unload")
    console.print(f"{name}: unloaded")
