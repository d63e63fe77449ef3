"""The daemon's metrics read by Prometheus's own parser (prometheus_client's
OpenMetrics parser): what `switchboard metrics` prints is valid OpenMetrics,
and its counters and histograms agree with the calls a Python client made."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Dict

from conftest import Daemon, run_async
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import switchboard


@run_async
async def test_the_exposition_parses_as_openmetrics_and_counts_the_calls_made(daemon: Daemon) -> None:
    server, caller = await switchboard.connect(daemon.address), await switchboard.connect(daemon.address)
    await server.serve("py", {"double": lambda x: 2 * x})
    for n in range(12):
        assert await caller.call("py.double", {"x": n}) == 2 * n
    for _ in range(3):
        with contextlib.suppress(switchboard.NoSuchMethod):
            await caller.call("py.missing")
    out = await asyncio.to_thread(daemon.cli, "metrics")
    parsed = text_string_to_metric_families(out.stdout)  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    labels: Dict[str, str] = {"service": "py", "method": "double", "path": "routed"}

    calls = [s for s in families["switchboard_calls"].samples if s.labels == labels]
    assert [s.value for s in calls] == [12.0], calls
    histogram = families["switchboard_call_duration_seconds"]
    assert histogram.type == "histogram" and histogram.unit == "seconds"
    mine = [s for s in histogram.samples if {k: v for k, v in s.labels.items() if k != "le"} == labels]
    counts = {s.name: s.value for s in mine if not s.name.endswith("_bucket")}
    assert counts["switchboard_call_duration_seconds_count"] == 12.0, counts
    buckets = [s.value for s in mine if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 12.0, "cumulative, ending at the count"
    # A method no instance serves is refused before routing, counted by kind only.
    refused = {s.labels["kind"]: s.value for s in families["switchboard_calls_refused"].samples}
    assert refused.get("no_such_method") == 3.0, refused
    server.close()
    caller.close()
