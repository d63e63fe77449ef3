"""Circuit breakers: the state machine on its own, then against the real
daemon — a service that keeps timing out opens the breaker, calls fail at
once while it is open, `switchboard ls --breakers` lists it for this process,
and a probe closes it once the service recovers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from conftest import Daemon, eventually, run_async

import switchboard
from switchboard.breaker import Admission, Breaker, BreakerPolicy, Breakers

POLICY = BreakerPolicy(window=10.0, min_calls=4, failure_rate=0.5, cool_down=5.0)
TIMEOUT = switchboard.Timeout("slow")


def test_a_breaker_opens_on_the_rate_probes_after_the_cool_down_and_closes_on_success() -> None:
    breaker, t0 = Breaker(POLICY), 100.0
    for failed in (False, True, False):
        assert breaker.admit(t0) == (Admission.GO, 0.0)
        breaker.record(t0, Admission.GO, failed)
    assert breaker.state == "closed", "3 calls are fewer than min_calls"
    assert breaker.record(t0, Admission.GO, True), "2 of 4 failed: it opens"
    assert breaker.state == "open"
    assert breaker.admit(t0 + 2) == (None, 3.0)
    assert breaker.admit(t0 + 5) == (Admission.PROBE, 0.0)
    assert breaker.admit(t0 + 5) == (None, 0.0), "one probe at a time"
    assert breaker.record(t0 + 5, Admission.PROBE, False)
    assert breaker.state == "closed"
    # Old outcomes are forgotten.
    for _ in range(3):
        breaker.record(t0 + 6, Admission.GO, True)
    breaker.record(t0 + 17, Admission.GO, True)
    assert breaker.state == "closed"


def test_services_keep_their_own_setting_and_only_signs_of_an_unwell_service_count() -> None:
    breakers = Breakers()
    assert breakers.admit("flaky", 0.0) is None, "off by default"
    breakers.set_policy_for("flaky", POLICY)
    assert breakers.admit("flaky", 0.0) is Admission.GO
    assert breakers.admit("other", 0.0) is None
    breakers.set_policy(POLICY)
    breakers.set_policy_for("slow", None)
    assert breakers.admit("slow", 0.0) is None, "no breaker for it, whatever the default"
    assert breakers.admit("$sys", 0.0) is None, "the daemon's own services are never guarded"
    assert breakers.admit("other", 0.0) is Admission.GO, "the default: on"
    for _ in range(4):
        breakers.record("other", Admission.GO, switchboard.Rejected("no"), 0.0)
    assert breakers.not_closed() == [], "the service's own answers do not count"
    for _ in range(4):
        breakers.record("other", Admission.GO, TIMEOUT, 0.0)
    assert breakers.not_closed() == [("other", "open")]
    assert breakers.report() == {"breakers": [{"service": "other", "state": "open"}]}


@run_async
async def test_a_failing_service_opens_the_breaker_which_fails_fast_and_closes_after_recovery(daemon: Daemon) -> None:
    server, bus = await switchboard.connect(daemon.address), await switchboard.connect(daemon.address)
    sick = True

    async def work() -> None:
        if sick:
            await asyncio.sleep(1.0)

    await server.serve("flaky", {"work": work})
    bus.set_breakers(BreakerPolicy(min_calls=5, cool_down=0.5))
    for _ in range(5):
        with contextlib.suppress(switchboard.Timeout):
            await bus.call("flaky.work", timeout=0.1)
    assert bus.open_breakers() == [("flaky", "open")]
    session = (await bus.whoami())["session"]

    async def listed(state: str) -> bool:
        out = await asyncio.to_thread(daemon.cli, "ls", "--breakers", "--json")
        shown = [p for p in json.loads(out.stdout) if p["session"] == session]
        return any(b == {"service": "flaky", "state": state} for p in shown for b in p["breakers"])

    await eventually(lambda: listed("open"), "the open breaker listed by ls --breakers")
    started = time.monotonic()
    for _ in range(100):
        try:
            await bus.call("flaky.work", timeout=0.1)
            raise AssertionError("an open breaker let a call through")
        except switchboard.CircuitOpen as err:
            assert err.kind == "circuit_open" and "flaky" in err.message
    per_call = (time.monotonic() - started) / 100
    assert per_call < 0.01, f"not failing fast: {per_call * 1000:.2f} ms per call"

    sick = False
    await asyncio.sleep(0.55)
    await bus.call("flaky.work", timeout=0.1)
    assert bus.open_breakers() == []

    async def gone() -> bool:
        return not await listed("open")

    await eventually(gone, "the closed breaker no longer listed")
    # A probe abandoned by its caller opens the breaker again, not wedging it half-open.
    sick = True
    for _ in range(5):
        with contextlib.suppress(switchboard.Timeout):
            await bus.call("flaky.work", timeout=0.1)
    await asyncio.sleep(0.55)
    probe = asyncio.ensure_future(bus.call("flaky.work", timeout=5.0))
    await asyncio.sleep(0.05)
    assert bus.open_breakers() == [("flaky", "half-open")]
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    assert bus.open_breakers() == [("flaky", "open")]
    for b in (server, bus):
        b.close()
