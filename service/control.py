"""Model control while serving: the repository API's index, load and unload.

Allowed in the default mode (the repository is also polled, ``service.versions``), unlike
Triton, which takes explicit loads only with ``--model-control-mode=explicit``: an operator needs
to take a bad model out of rotation without a restart whatever the mode, and the two do not
fight, because an unload is sticky (polling leaves that variant alone) until a load.

Actions are per variant: ``depthwise`` and ``depthwise@onnx`` both name the depthwise variant,
and its every served runtime is loaded or unloaded together. The process that owns the models
acts (:class:`LocalControl`); a front end of the executor engine forwards the action to the
executor and waits for its answer (:class:`RemoteControl`). With ``--engine replicas`` every
worker owns its own models and no one process could act for all: the API answers 501 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.errors import BadRequest
from service.registry import ModelRegistry
from service.remote import ExecutorClient
from service.versions import VersionWatcher

# The V2 repository index's states, from ours.
INDEX_STATES = {
    "ready": "READY",
    "loading": "LOADING",
    "failed": "UNAVAILABLE",
    "unloaded": "UNAVAILABLE",
    "retired": "UNAVAILABLE",
}


@dataclass(frozen=True)
class IndexEntry:
    """One model of the repository index."""

    name: str
    version: str
    state: str
    reason: str


def index(registry: ModelRegistry, ready_only: bool = False) -> list[IndexEntry]:
    """Every served model name (each variant, and each variant@runtime) with its state (only
    those serving, with ``ready_only``)."""
    entries = []
    for variant, served in registry.variants.items():
        for model in served.runtimes.values():
            names = [model.name, variant] if model is served.default else [model.name]
            for name in names:
                entries.append(
                    IndexEntry(
                        name,
                        str(model.model.version),
                        INDEX_STATES[model.state],
                        model.reason or "",
                    )
                )
    if ready_only:
        entries = [e for e in entries if e.state == INDEX_STATES["ready"]]
    return sorted(entries, key=lambda e: e.name)


class ModelControl(Protocol):
    """Load or unload a variant; ServeError (404 unknown, 400 failed to load) if it cannot."""

    async def load(self, name: str) -> None:
        """Serve the variant ``name`` names (its pinned or latest version)."""
        ...

    async def unload(self, name: str) -> None:
        """Stop serving it once its requests in flight are done."""
        ...


class LocalControl:
    """This process owns the models: act on them."""

    def __init__(self, registry: ModelRegistry, versions: VersionWatcher) -> None:
        self.registry = registry
        self.versions = versions

    def variant(self, name: str) -> str:
        """The variant a model name names (404 if none)."""
        return self.registry.lookup(name).model.variant

    async def load(self, name: str) -> None:
        """Serve it; 400 with the reason if it does not load."""
        variant = self.variant(name)
        error = await self.versions.load(variant)
        if error is not None:
            raise BadRequest(f"failed to load {variant}: {error}")

    async def unload(self, name: str) -> None:
        """Stop serving it."""
        await self.versions.unload(self.variant(name))


class RemoteControl:
    """A front end: the executor owns the models; it acts and says how it went."""

    def __init__(self, registry: ModelRegistry, client: ExecutorClient) -> None:
        self.registry = registry
        self.client = client

    async def load(self, name: str) -> None:
        """Ask the executor to serve it."""
        variant = self.registry.lookup(name).model.variant
        error = await self.client.control("load", variant)
        if error is not None:
            raise BadRequest(error)

    async def unload(self, name: str) -> None:
        """Ask the executor to stop serving it."""
        variant = self.registry.lookup(name).model.variant
        error = await self.client.control("unload", variant)
        if error is not None:
            raise BadRequest(error)
