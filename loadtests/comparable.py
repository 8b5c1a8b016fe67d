"""What makes two load tests comparable: the key the history stores with each run.

Two runs compare (in the report's "previous comparable run", ``mnist-serve history check``)
only when their keys match: the same models, protocols, levels and payloads on the same CPU,
against a service started with the same options and, with ``--tuned``, the same tuned
configurations; or, for a service the run did not start (``--url``), one that reported the same
engine and the same batching for each model. :mod:`loadtests.history` stores and looks up runs
by it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from loadtests.results import LoadPlan, Machine, RunRecord
from modelrepo.tuned import ServingConfig


def comparable_key(
    plan: LoadPlan,
    machine: Machine,
    server_args: Sequence[str] = (),
    tuned: Mapping[str, ServingConfig] | None = None,
    elsewhere: Mapping[str, object] | None = None,
) -> str:
    """What must match for two runs to compare: models, protocols, levels, payloads, CPU, the
    options of the service the run started (``--tuned``, ``--workers 1``...) and, with
    ``--tuned``, the configurations it ran (``tuned``: a model tuned again no longer compares
    with its run before as if only the code had changed); for a service it did not start
    (``--url``), whose options are unknown, how that service said it served (``elsewhere``:
    :func:`served_elsewhere`). A service started at its defaults adds nothing, so the keys of
    runs stored before the options counted still match."""
    key: dict[str, object] = {
        "variants": list(plan.variants),
        "runtimes": list(plan.runtimes),
        "protocols": list(plan.protocols),
        "concurrency": list(plan.concurrency),
        "mode": plan.mode,
        "cpu": machine.cpu,
    }
    if server_args:
        key["server"] = list(server_args)
    if tuned:
        key["tuned"] = {model: config.model_dump() for model, config in tuned.items()}
    if elsewhere:
        key["elsewhere"] = dict(elsewhere)
    return json.dumps(key, sort_keys=True)


def served_elsewhere(record: RunRecord | None) -> dict[str, object]:
    """What the key holds of a service the run did not start (``--url``): the engine, workers
    and in-flight limit it reported (``/engine``) and how each model measured batched
    (``/variants``), or that it reported none (a server that is not mnist-serve). Empty for a
    service the run started (its options are in the key) or no record."""
    if record is None or record.started_server:
        return {}
    if record.engine is None:
        return {"engine": "none reported"}
    batching = {model: asdict(b) for model, b in record.batching().items()}
    return asdict(record.engine) | ({"batching": batching} if batching else {})
