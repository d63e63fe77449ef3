"""Calls, notifications and broadcasts between Python services through a real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Dict, List, Optional, Tuple

from conftest import Daemon, eventually, run_async

import switchboard


@run_async
async def test_a_typed_server_takes_keyword_arguments_and_shows_its_signatures(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)

    def double(x: int) -> int:
        return x * 2

    async def charge(account: str, cents: int, note: Optional[str] = None) -> Dict[str, object]:
        return {"account": account, "cents": cents, "note": note}

    await bus.serve("billing", {"double": double, "charge": charge})
    assert await bus.call("billing.double", {"x": 21}, timeout=2.0) == 42
    assert await bus.call("billing.charge", {"account": "a", "cents": 5}) == {
        "account": "a",
        "cents": 5,
        "note": None,
    }
    [info] = [s for s in await bus.services() if s["service"] == "billing"]
    assert sorted(info["instances"][0]["signatures"]) == [
        "charge(account: str, cents: int, note: Optional[str]) -> Dict[str, object]",
        "double(x: int) -> int",
    ]
    # The CLI's JSON maps onto the keyword arguments, and `ls` shows the signatures.
    out = await asyncio.to_thread(daemon.cli, "call", "billing.charge", '{"account":"b","cents":7}')
    assert json.loads(out.stdout) == {"account": "b", "cents": 7, "note": None}
    listing = await asyncio.to_thread(daemon.cli, "ls", "billing")
    assert "double(x: int) -> int" in listing.stdout
    bus.close()


@run_async
async def test_arguments_that_do_not_fit_are_bad_arguments_naming_method_and_argument(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)

    def double(x: int) -> int:
        return x * 2

    await bus.serve("math", {"double": double})
    cases = [
        ({"x": "five"}, "argument `x` of double (a string): expected int"),
        ({}, "argument `x` of double is missing"),
        ({"x": 1, "y": 2}, "argument `y` of double is not expected"),
        ([1, 2], "expected a map of argument names to values, got an array"),
    ]
    for args, message in cases:
        try:
            await bus.call("math.double", args)
        except switchboard.BadArguments as err:
            assert message in err.message, err.message
            assert err.kind == "bad_arguments"
        else:
            raise AssertionError(f"{args!r} was accepted")
    bus.close()


@run_async
async def test_handlers_see_the_verified_caller_headers_and_deadline(daemon: Daemon) -> None:
    server = await switchboard.connect(daemon.address, name="server")
    caller = await switchboard.connect(daemon.address, name="caller")
    seen: List[switchboard.Request] = []

    def who() -> str:
        request = switchboard.current_request()
        assert request is not None
        seen.append(request)
        return request.caller.principal

    await server.serve("who", {"am_i": who})
    principal = await caller.call("who.am_i", None, timeout=5.0, headers={"trace": "abc"})
    me = await caller.whoami()
    assert principal == me["principal"]
    request = seen[0]
    assert request.caller.session == me["session"] and request.caller.pid == me["pid"]
    # The caller's headers, and the trace context every call carries.
    assert request.headers["trace"] == "abc" and set(request.headers) == {"trace", "traceparent"}
    remaining = request.remaining()
    assert remaining is not None and 4.0 < remaining <= 5.0
    assert switchboard.current_request() is None
    server.close()
    caller.close()


@run_async
async def test_notifications_reach_one_instance_or_all_and_broadcasts_answer_per_instance(daemon: Daemon) -> None:
    buses = [await switchboard.connect(daemon.address) for _ in range(3)]
    got: List[str] = []
    for index, bus in enumerate(buses):

        def note(text: str, index: int = index) -> str:
            got.append(f"{index}:{text}")
            return f"instance {index}"

        await bus.serve("worker", {"note": note})
    caller = await switchboard.connect(daemon.address)
    await caller.notify("audit.note", "dropped: nobody serves it")
    await caller.notify("worker.note", {"text": "one"})
    await caller.notify("worker.note", {"text": "all"}, all=True)
    await caller.flush()

    async def four() -> bool:
        return len(got) == 4

    await eventually(four, "four notifications arrived")
    assert sorted(g.split(":")[1] for g in got) == ["all", "all", "all", "one"]
    answers = await caller.broadcast("worker.note", {"text": "b"}, timeout=2.0)
    assert len(answers) == 3 and all(a.ok for a in answers)
    assert sorted(a.value for a in answers) == ["instance 0", "instance 1", "instance 2"]
    assert len({a.instance for a in answers}) == 3
    for bus in [*buses, caller]:
        bus.close()


@run_async
async def test_a_call_can_pick_its_instance_and_plain_and_async_handlers_mix(daemon: Daemon) -> None:
    a = await switchboard.connect(daemon.address)
    b = await switchboard.connect(daemon.address)
    await a.serve("pick", {"me": lambda: "a"})

    async def me_b() -> str:
        await asyncio.sleep(0)
        return "b"

    service_b = await b.serve("pick", {"me": me_b})
    results = {await a.call("pick.me", instance=service_b.instance) for _ in range(5)}
    assert results == {"b"}
    await service_b.stop()
    assert await a.call("pick.me") == "a"
    a.close()
    b.close()


@run_async
async def test_raw_payloads_pass_unchanged(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)
    await bus.serve("raw", {"echo": lambda data: data})
    assert await bus.call("raw.echo", {"data": b"\x00\xffbytes"}) == b"\x00\xffbytes"
    # A raw payload that is not an argument map is refused, typed.
    try:
        await bus.call("raw.echo", b"\x01\x02", raw=True)
    except switchboard.BadArguments:
        pass
    else:
        raise AssertionError("a raw non-map payload was accepted")
    bus.close()


def test_the_synchronous_facade_calls_serves_publishes_and_uses_queues(daemon: Daemon) -> None:
    from switchboard import sync

    with sync.connect(daemon.address, name="script") as bus:
        bus.serve("sync", {"add": lambda a, b: a + b})
        assert bus.call("sync.add", {"a": 2, "b": 3}, timeout=2.0) == 5
        try:
            bus.call("sync.nope")
        except switchboard.NoSuchMethod:
            pass
        else:
            raise AssertionError("an unknown method answered")
        sub = bus.subscribe("script.>")
        bus.publish("script.done", {"ok": True}, retain=True)
        item = sub.next(timeout=5)
        assert isinstance(item, switchboard.Message) and item.value == {"ok": True}
        bus.put("chores", "sweep", priority=3)
        [delivery] = bus.get("chores", count=5, wait=0.5)
        assert delivery.value == "sweep" and delivery.priority == 3
        assert bus.whoami()["principal"].startswith("user:")


@run_async
async def test_a_registry_watch_sees_instances_come_and_go(daemon: Daemon) -> None:
    watcher = await switchboard.connect(daemon.address)
    events = await watcher.watch()
    server = await switchboard.connect(daemon.address, name="watched")
    service = await server.serve("watched", {"ping": lambda: "pong"})
    up = await asyncio.wait_for(events.get(), 5)
    assert (up["event"], up["service"], up["instance"]) == ("up", "watched", service.instance)
    assert up["methods"] == ["ping"]
    await service.stop()
    down = await asyncio.wait_for(events.get(), 5)
    assert (down["event"], down["service"]) == ("down", "watched")
    watcher.close()
    server.close()


@run_async
async def test_a_handlers_calls_inherit_the_deadline_of_the_request_it_serves(daemon: Daemon) -> None:
    a = await switchboard.connect(daemon.address)
    b = await switchboard.connect(daemon.address)
    c = await switchboard.connect(daemon.address)
    reached_c: List[int] = []
    seen: List[Tuple[str, float]] = []

    async def wait() -> None:
        reached_c.append(1)
        await asyncio.sleep(2)

    async def relay(pause: float) -> None:
        await asyncio.sleep(pause)
        started = time.monotonic()
        try:
            await b.call("slow.wait")  # its own default: 30 s
        except switchboard.CallError as err:
            seen.append((err.kind, time.monotonic() - started))
            raise

    await c.serve("slow", {"wait": wait})
    await b.serve("mid", {"relay": relay})
    with contextlib.suppress(switchboard.Timeout):
        await a.call("mid.relay", {"pause": 0}, timeout=0.3)
    await eventually(lambda: _true_if(seen), "B saw its call end")
    kind, took = seen.pop()
    assert kind == "timeout" and 0.2 <= took < 1.0, (kind, took)
    assert len(reached_c) == 1
    with contextlib.suppress(switchboard.Timeout):
        await a.call("mid.relay", {"pause": 0.35}, timeout=0.3)
    await eventually(lambda: _true_if(seen), "B saw its late call refused")
    kind, took = seen.pop()
    assert kind == "timeout" and took < 0.05, (kind, took)
    assert len(reached_c) == 1, "the late call was never sent"
    for bus in (a, b, c):
        bus.close()


@run_async
async def test_one_trace_id_follows_a_chain_and_what_a_handler_sends(daemon: Daemon) -> None:
    buses = [await switchboard.connect(daemon.address) for _ in range(4)]
    a, b, c, watcher = buses
    seen: List[Tuple[str, switchboard.TraceParent]] = []

    def hop(name: str, bus: switchboard.Bus, nxt: Optional[str]) -> Any:
        async def go() -> None:
            context = switchboard.trace.current()
            assert context is not None
            seen.append((name, context))
            if nxt is not None:
                await bus.call(nxt)
                await bus.publish("traced.event", name)
                await bus.queue("traced").put(name)

        return go

    await a.serve("a", {"go": hop("A", a, "b.go")})
    await b.serve("b", {"go": hop("B", b, "c.go")})
    await c.serve("c", {"go": hop("C", c, None)})
    events = await watcher.subscribe("traced.>")
    jobs = await watcher.queue("traced").consume()
    await watcher.call("a.go")
    assert [name for name, _ in seen] == ["A", "B", "C"]
    assert len({context.trace_id for _, context in seen}) == 1, seen
    assert len({context.parent_id for _, context in seen}) == 3, "a new span at each hop"
    trace_id = seen[0][1].trace_id
    message = await events.next(timeout=5)
    assert isinstance(message, switchboard.Message)
    published = switchboard.TraceParent.parse(message.headers["traceparent"])
    assert published is not None and published.trace_id == trace_id
    job = await jobs.next(timeout=5)
    assert job is not None
    put = switchboard.TraceParent.parse(job.headers["traceparent"])
    assert put is not None and put.trace_id == trace_id
    # A caller's own traceparent is kept; a Rust-format value parses the same.
    own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen.clear()
    await watcher.call("c.go", headers={"traceparent": own})
    assert str(seen[0][1]) == own
    # Turned off for the process (SWITCHBOARD_TRACE=0 does the same): calls
    # outside a request carry none.
    await c.serve("keys", {"of": lambda: sorted(switchboard.current_request().headers)})  # type: ignore[union-attr]
    switchboard.trace.set_enabled(False)
    try:
        assert await watcher.call("keys.of") == []
    finally:
        switchboard.trace.set_enabled(True)
    assert await watcher.call("keys.of") == ["traceparent"]
    for bus in buses:
        bus.close()


@run_async
async def test_retries_wait_for_a_late_service_never_repeat_a_rejection_and_keep_to_a_budget(
    daemon: Daemon,
) -> None:
    client = await switchboard.connect(daemon.address)
    server = await switchboard.connect(daemon.address)

    async def register_late() -> None:
        await asyncio.sleep(0.2)
        await server.serve("late", {"get": lambda: "here", "refuse": _refuse})

    registering = asyncio.ensure_future(register_late())
    patient = switchboard.RetryPolicy(max_attempts=30, max_delay=0.1)
    value, attempts = await client.call_attempts("late.get", timeout=5, retry=patient)
    assert value == "here" and attempts >= 2, attempts
    await registering
    try:
        await client.call("late.refuse", retry=switchboard.RetryPolicy(idempotent=True))
    except switchboard.Rejected as err:
        assert err.attempts == 1, "the service's own answer is final"
    else:
        raise AssertionError("a rejection was retried into a success")
    quick = switchboard.RetryPolicy(max_attempts=5, initial=0.001)
    total = 0
    for _ in range(40):
        try:
            await client.call("nobody.here", retry=quick)
        except switchboard.NoSuchService as err:
            total += err.attempts
    assert total == 53, f"40 calls made {total} attempts (40 + a burst of 10 + 3 earned)"
    client.close()
    server.close()


def _refuse() -> None:
    raise switchboard.Rejected("not today")


async def _true_if(items: List[Any]) -> bool:
    return bool(items)


@run_async
async def test_a_traced_call_gathers_each_hop_with_its_deadline_from_python_and_the_cli(daemon: Daemon) -> None:
    a, b, c, caller = [await switchboard.connect(daemon.address) for _ in range(4)]

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    def refuse() -> None:
        raise switchboard.Rejected("no")

    await c.serve("pc", {"work": slow, "refuse": refuse})
    await b.serve("pb", {"work": lambda: b.call("pc.work"), "refuse": lambda: b.call("pc.refuse")})
    await a.serve("pa", {"work": lambda: a.call("pb.work"), "refuse": lambda: a.call("pb.refuse")})

    traced = await caller.call_traced("pa.work", timeout=2.0)
    assert traced.ok and traced.value == "done", traced
    assert [(h.depth, h.service, h.method, h.outcome) for h in traced.hops] == [
        (0, "pa", "work", "ok"),
        (1, "pb", "work", "ok"),
        (2, "pc", "work", "ok"),
    ]
    deadlines = [h.deadline_ms for h in traced.hops]
    assert 1500 < deadlines[0] <= 2000 and deadlines[2] < deadlines[1] < deadlines[0], deadlines
    took = [h.took_us for h in traced.hops]
    assert took[2] >= 50_000 and took[0] >= took[1] >= took[2], took

    failed = await caller.call_traced("pa.refuse")
    assert isinstance(failed.error, switchboard.Rejected)
    assert [h.outcome for h in failed.hops] == ["rejected"] * 3
    # An untraced call carries no request for hops, and gets none.
    await c.serve("keys", {"of": lambda: sorted(switchboard.current_request().headers)})  # type: ignore[union-attr]
    assert await caller.call("keys.of") == ["traceparent"]

    # The Rust CLI reads the hops Python handlers report.
    out = await asyncio.to_thread(daemon.cli, "call", "pa.work", "--trace", "--json")
    report = json.loads(out.stdout)
    assert report["reply"] == "done"
    assert [h["service"] for h in report["hops"]] == ["pa", "pb", "pc"], report
    for bus in (a, b, c, caller):
        bus.close()
