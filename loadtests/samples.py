"""Exact per-request samples of a load test, kept apart from Locust.

Locust's statistics round times over 2 ms to whole milliseconds; these are not rounded. This
module does not import Locust (which monkey-patches the whole process with gevent on import), so
the runner, the report and the tests can read and write samples safely.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# ``window``: the index of the scheduled window the request was sent in (0 without a
# schedule), or -1 when it started in a window's settling time (not counted).
SAMPLE_FIELDS = (
    "latency_ms",
    "ok",
    "correct",
    "queue_ms",
    "model_ms",
    "finished_at",
    "status",
    "window",
)
# Kept per status of the failed requests: the server's first message (not per request).
MESSAGE_LIMIT = 300
# How often a Locust worker reports to its master (locust.runners.WORKER_REPORT_INTERVAL, Locust
# 2.47): a lost last report loses at most this much of the run's end.
REPORT_INTERVAL_S = 3.0


class Recorder:
    """Exact per-request samples, recorded after the warm-up window."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {name: [] for name in SAMPLE_FIELDS}
        self.record_from = float("inf")
        self.window_start = 0.0
        # CPU this process spent inside the window: is the load generator the bottleneck?
        self.cpu_s = 0.0
        self._cpu_mark: float | None = None
        # Per window, then per status code of a failed request (text keys: they travel to
        # Locust's master), the first error message seen: each window's own model's.
        self.messages: dict[str, dict[str, str]] = {}
        # Locust's master waits only 0.5 s for its workers' last reports before it stops
        # (locust.runners.MasterRunner.quit): a worker marks the reports it sends once stopped
        # (``final``), and the master counts the workers whose last report it got, so that a
        # lost one is said (``missing_reports``), not silently a window with fewer samples.
        self.final = False
        self.workers_expected = 0
        self.workers_final: set[str] = set()

    def start(self, warmup_s: float) -> None:
        """Open the recording window ``warmup_s`` seconds from now."""
        self.window_start = time.time() + warmup_s
        self.record_from = self.window_start

    def add(
        self,
        latency_ms: float,
        ok: bool,
        correct: bool,
        queue_ms: float,
        model_ms: float,
        status: int = 200,
        error: str = "",
        window: int = 0,
    ) -> None:
        """Record one finished request, unless it started during the warm-up. ``status`` is the
        protocol's own code (HTTP status, 0: no answer; gRPC code), or -1 when the load
        generator's own task raised (``protocols.GENERATOR_ERROR``); ``error`` says why a failed
        request failed (the first per status is kept)."""
        now = time.time()
        if now - latency_ms / 1000 < self.record_from:
            return  # started during the warm-up
        if self._cpu_mark is None:
            self._cpu_mark = time.process_time()
        for name, value in zip(
            SAMPLE_FIELDS,
            (latency_ms, ok, correct, queue_ms, model_ms, now, status, window),
            strict=True,
        ):
            self.columns[name].append(float(value))
        if not ok:
            found = self.messages.setdefault(str(int(window)), {})
            found.setdefault(str(status), error[:MESSAGE_LIMIT])

    def _take_cpu(self) -> float:
        if self._cpu_mark is None:
            return 0.0
        now = time.process_time()
        used, self._cpu_mark = now - self._cpu_mark, now
        return used

    def drain(self) -> dict[str, Any]:
        """Hand over what was recorded since the last drain (a worker's report to the master)."""
        data = {
            "window_start": self.window_start,
            "cpu_s": self._take_cpu(),
            "messages": self.messages,
            "final": self.final,
            **self.columns,
        }
        self.columns = {name: [] for name in SAMPLE_FIELDS}
        self.messages = {}
        return data

    def merge(self, data: dict[str, Any], worker: str = "") -> None:
        """Take in a worker's drained samples (on the master)."""
        if data.get("final"):
            self.workers_final.add(worker)
        for name in SAMPLE_FIELDS:
            self.columns[name].extend(data[name])
        self.cpu_s += data["cpu_s"]
        for window, messages in data.get("messages", {}).items():
            found = self.messages.setdefault(window, {})
            for status, message in messages.items():
                found.setdefault(status, message)
        if data["window_start"]:
            self.window_start = min(self.window_start or data["window_start"], data["window_start"])

    def save(self, path: str) -> None:
        """Write every sample as ``.npz`` (one array per field, plus the window, the CPU and the
        first error message per window and failed status: ``error_window``, ``error_status``,
        ``error_message``; and ``missing_reports``, the workers whose last report never came)."""
        arrays = {
            name: np.asarray(values, dtype=np.float64) for name, values in self.columns.items()
        }
        self.cpu_s += self._take_cpu()
        arrays["window_start"] = np.asarray(self.window_start, dtype=np.float64)
        arrays["generator_cpu_s"] = np.asarray(self.cpu_s, dtype=np.float64)
        missing = max(0, self.workers_expected - len(self.workers_final))
        arrays["missing_reports"] = np.asarray(missing, dtype=np.int64)
        kept = [(int(w), int(c), m) for w, by in self.messages.items() for c, m in by.items()]
        arrays["error_window"] = np.asarray([w for w, _, _ in kept], dtype=np.int64)
        arrays["error_status"] = np.asarray([c for _, c, _ in kept], dtype=np.int64)
        arrays["error_message"] = np.asarray([m for _, _, m in kept], dtype=np.str_)
        np.savez_compressed(path, allow_pickle=False, **arrays)
