"""The front ends' channel to the model executor: tensors in shared memory, small messages.

Each front end owns one shared-memory block cut into slots, one per request in flight; a slot
holds up to ``max_images`` input images (float32, 28x28x1) followed by their probabilities
(float32, 10 each). A request is the front end writing its images into a free slot and sending
a 13-byte message on a Unix socket; the executor reads the images in place (no copy, no
pickle), runs them in a batch, writes the probabilities into the same slot and answers with a
16-byte message. Only the messages that describe models (a front end's hello, the executor's
model states) are JSON, and they are rare.

Frames: one type byte, then a fixed struct (REQUEST, ANSWER) or a 4-byte length and JSON.

``multiprocessing.shared_memory`` registers every block with Python's resource tracker, which
would unlink it when *any* process that touched it exits (the executor, on a restart, would
take the front end's block with it; Python 3.13's ``track=False`` fixes that). So both sides
unregister their blocks here, and the supervisor, which names them, unlinks them: this module
is the only one that knows.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import json
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from modelrepo.contract import CLASSES, INPUT_SHAPE, PIXELS
from service.schemas import Batching

HELLO, STATES, REQUEST, ANSWER = b"H", b"S", b"R", b"A"
CONTROL, CONTROL_DONE = b"C", b"D"  # a front end's load/unload for the executor, and its answer
REQUEST_STRUCT = struct.Struct("<IHHI")  # request id, model index, images, slot
ANSWER_STRUCT = struct.Struct("<IBHff")  # request id, status, batch images, queue s, model s
LENGTH = struct.Struct("<I")
FIXED = {REQUEST[0]: REQUEST_STRUCT, ANSWER[0]: ANSWER_STRUCT}

# An answer's status: what the front end raises for it (service.remote maps them).
OK, OVERLOADED, FAILED, UNAVAILABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class ModelState:
    """One model as the executor reports it to the front ends."""

    name: str
    state: str  # loading, ready or failed
    reason: str | None = None
    device: str | None = None
    batch1_ms: float | None = None
    inline: bool = False
    version: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # the variant's refused versions
    index: int = 0  # what requests address it by (stable for the executor's life)
    newest: bool = True  # the variant's newest version served (else an older one, latest:N)
    batching: Batching | None = None  # how it batches, once loaded


@dataclass(frozen=True)
class Hello:
    """A front end introducing itself: its process index and its shared-memory block."""

    process: int
    block: str
    slots: int
    max_images: int


def frame(kind: bytes, payload: Any) -> bytes:
    """A JSON frame (HELLO, STATES)."""
    data = json.dumps(payload).encode()
    return kind + LENGTH.pack(len(data)) + data


def hello_frame(hello: Hello) -> bytes:
    """A front end's HELLO."""
    return frame(HELLO, asdict(hello))


def states_frame(states: list[ModelState]) -> bytes:
    """The executor's STATES: every model, in index order."""
    return frame(STATES, [{**asdict(s), "batching": _dump(s.batching)} for s in states])


@dataclass(frozen=True)
class Control:
    """A model-control action a front end forwards (``service.control``), or its answer."""

    id: int
    action: str = ""  # load or unload (empty in an answer)
    variant: str = ""
    error: str | None = None  # the answer: None once done


def control_frame(kind: bytes, control: Control) -> bytes:
    """A CONTROL or CONTROL_DONE frame."""
    return frame(kind, asdict(control))


def read_control(payload: bytes) -> Control:
    """A CONTROL or CONTROL_DONE frame's contents."""
    return Control(**json.loads(payload))


def read_hello(payload: bytes) -> Hello:
    """A HELLO frame's contents."""
    return Hello(**json.loads(payload))


def read_states(payload: bytes) -> list[ModelState]:
    """A STATES frame's contents."""
    states = []
    for item in json.loads(payload):
        batching = item.pop("batching", None)
        states.append(ModelState(**item, batching=batching and Batching(**batching)))
    return states


def _dump(batching: Batching | None) -> dict[str, Any] | None:
    return batching.model_dump() if batching is not None else None


class Frames:
    """Bytes from a stream in, whole frames out: ``(kind, fixed fields or JSON bytes)``."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, Any]]:
        """Add ``data``; yield every frame now complete."""
        buffer = self._buffer
        buffer += data
        offset = 0
        end = len(buffer)
        while offset < end:
            kind = buffer[offset]
            fixed = FIXED.get(kind)
            if fixed is not None:
                if end - offset - 1 < fixed.size:
                    break
                yield kind, fixed.unpack_from(buffer, offset + 1)
                offset += 1 + fixed.size
                continue
            if end - offset - 1 < LENGTH.size:
                break
            (length,) = LENGTH.unpack_from(buffer, offset + 1)
            start = offset + 1 + LENGTH.size
            if end - start < length:
                break
            yield kind, bytes(buffer[start : start + length])
            offset = start + length
        del buffer[:offset]


class Slots:
    """A shared-memory block of request slots: the images in, the probabilities out."""

    def __init__(self, block: SharedMemory, slots: int, max_images: int) -> None:
        self.block = block
        self.slots = slots
        self.max_images = max_images
        self._input_bytes = max_images * PIXELS * 4
        self.slot_bytes = self._input_bytes + max_images * CLASSES * 4
        self._free = list(range(slots - 1, -1, -1))  # LIFO: hot slots stay in cache and RAM

    @staticmethod
    def size(slots: int, max_images: int) -> int:
        """The block's bytes."""
        return slots * max_images * (PIXELS + CLASSES) * 4

    @classmethod
    def create(cls, name: str, slots: int, max_images: int) -> Slots:
        """A new block (a front end's)."""
        block = SharedMemory(name, create=True, size=cls.size(slots, max_images))
        untrack(block)
        return cls(block, slots, max_images)

    @classmethod
    def attach(cls, hello: Hello) -> Slots:
        """A front end's block, as the executor maps it."""
        block = SharedMemory(hello.block)
        untrack(block)
        return cls(block, hello.slots, hello.max_images)

    def take(self) -> int | None:
        """A free slot, or None when all are in use."""
        return self._free.pop() if self._free else None

    def give(self, slot: int) -> None:
        """Return a slot."""
        self._free.append(slot)

    def reset(self) -> None:
        """Every slot free again (the executor that used them is gone)."""
        self._free = list(range(self.slots - 1, -1, -1))

    def images(self, slot: int, count: int) -> np.ndarray:
        """The slot's first ``count`` input images, in place."""
        return np.ndarray((count, *INPUT_SHAPE), np.float32, self.block.buf, slot * self.slot_bytes)

    def probabilities(self, slot: int, count: int) -> np.ndarray:
        """The slot's first ``count`` output rows, in place."""
        offset = slot * self.slot_bytes + self._input_bytes
        return np.ndarray((count, CLASSES), np.float32, self.block.buf, offset)

    def close(self) -> None:
        """Unmap the block (views into it must be gone)."""
        self.block.close()


def untrack(block: SharedMemory) -> None:
    """Keep the resource tracker from unlinking ``block`` when this process exits."""
    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]


def unlink(name: str) -> None:
    """Remove a block by name, if it is still there (the supervisor cleans up; not through
    ``SharedMemory.unlink``, which would tell the tracker of a block it no longer tracks)."""
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name.lstrip("/"))
