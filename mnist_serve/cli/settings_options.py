"""Command-line options derived from a settings class, so the settings are written once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel


def settings_options(
    fields: type[BaseModel], flags: dict[str, str]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a ``**given`` command one ``--option`` per field of a settings class.

    Each option takes its help from the field's description and its default from the field
    (shown, not passed: an option left out is left to the MNIST_SERVE_* variable, then the
    default), so the settings are written once, in service.settings. Lists and mappings are
    typed as text and parsed by the settings' own validators. ``flags`` renames options.
    """

    def option_type(annotation: Any) -> Any:
        if annotation in (bool, int, float, Path):
            return annotation
        return str  # str, Literal, comma-separated lists, 'name=value' mappings

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        parameters = []
        for name, info in fields.model_fields.items():
            default = info.get_default(call_default_factory=True)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            if isinstance(default, dict):
                shown = ",".join(f"{k}={v}" for k, v in default.items())
            hint = f"{info.description or ''} (default: {shown if shown != '' else 'none'})"
            option = typer.Option(
                *([flags[name]] if name in flags else []), help=hint.strip(), show_default=False
            )
            kind = option_type(info.annotation)
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[kind | None, option],
                )
            )
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate
