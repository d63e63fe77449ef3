"""Every error kind, provoked for real against the daemon, arrives as its own
exception class with the daemon's (or the callee's) message."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
from typing import Any, Awaitable, Callable, Type

from conftest import Daemon, Helper, run_async

import switchboard
from switchboard import _wire as wire
from switchboard.errors import ErrorCode, from_wire

TOKEN = "a-long-random-token-value"
POLICY = f"""
[security]
tokens = {{ edge = "{TOKEN}" }}

[[policy]]
principal = "token:edge"
allow = ["call math.double"]
"""


async def raises(kind: Type[switchboard.CallError], action: Awaitable[Any], contains: str = "") -> str:
    try:
        await action
    except kind as err:
        assert contains in str(err), f"{err} does not say {contains!r}"
        return str(err)
    raise AssertionError(f"expected {kind.__name__}")


def test_every_code_has_its_class_and_name() -> None:
    for code in ErrorCode:
        err = from_wire(int(code), "why")
        assert type(err).__name__.lower() == code.kind.replace("_", ""), code
        assert err.code == code and err.kind == code.kind and err.message == "why"
    unknown = from_wire(999, "from a newer daemon")
    assert type(unknown) is switchboard.CallError and unknown.kind == "error_999"
    assert isinstance(from_wire(int(ErrorCode.TIMEOUT), ""), TimeoutError)


@run_async
async def test_routing_errors(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)

    async def slow(seconds: float) -> None:
        await asyncio.sleep(seconds)

    def refuse() -> None:
        raise switchboard.Rejected("no credit left")

    def broken() -> None:
        raise KeyError("account")

    await bus.serve("math", {"slow": slow, "refuse": refuse, "broken": broken})
    await bus.serve("single", {"slow": slow}, max_concurrency=1)
    await raises(switchboard.NoSuchService, bus.call("nope.x"), "nope")
    await raises(switchboard.NoSuchMethod, bus.call("math.nope"), "nope")
    await raises(switchboard.NoSuchInstance, bus.call("math.slow", {"seconds": 0}, instance=987654))
    await raises(switchboard.Timeout, bus.call("math.slow", {"seconds": 5}, timeout=0.2))
    await raises(switchboard.Rejected, bus.call("math.refuse"), "no credit left")
    await raises(switchboard.Rejected, bus.call("math.broken"), "broken raised KeyError")
    # One request at a time: a second, concurrent one is overloaded.
    first = asyncio.ensure_future(bus.call("single.slow", {"seconds": 0.5}))
    await asyncio.sleep(0.1)
    await raises(switchboard.Overloaded, bus.call("single.slow", {"seconds": 0}), "1 requests at once")
    await first
    # Registering a reserved name is a bad request.
    await raises(switchboard.BadRequest, bus.serve("$mine", {"x": lambda: None}))
    with_names = [bus.call("Bad.name"), bus.publish("a..b"), bus.subscribe("a.>.b")]
    for action in with_names:
        try:
            await action
        except switchboard.InvalidName:
            continue
        raise AssertionError("an invalid name was sent")
    bus.close()
    await raises(switchboard.Closed, bus.call("math.slow", {"seconds": 0}))


@run_async
async def test_too_large_payloads_fail_typed_and_keep_the_connection(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(args=["--max-frame", "65536"])
    bus = await switchboard.connect(daemon.address)
    await bus.serve("big", {"make": lambda size: b"x" * size, "echo": lambda data: len(data)})
    await raises(switchboard.PayloadTooLarge, bus.call("big.echo", {"data": b"x" * 70000}), "65536")
    await raises(switchboard.PayloadTooLarge, bus.call("big.make", {"size": 70000}), "too large")
    assert await bus.call("big.echo", {"data": b"x" * 1000}) == 1000
    bus.close()


@run_async
async def test_an_instance_killed_mid_call_is_instance_gone(daemon: Daemon, helpers: Callable[..., Helper]) -> None:
    helper = helpers(daemon.address, "slow-service")
    bus = await switchboard.connect(daemon.address)
    call = asyncio.ensure_future(bus.call("slow.wait", {"seconds": 30}, timeout=20))
    await asyncio.sleep(0.3)
    helper.process.send_signal(signal.SIGKILL)
    await raises(switchboard.InstanceGone, call)
    bus.close()


@run_async
async def test_a_daemon_stopping_answers_shutting_down(daemon: Daemon, helpers: Callable[..., Helper]) -> None:
    helpers(daemon.address, "slow-service")
    bus = await switchboard.connect(daemon.address)
    call = asyncio.ensure_future(bus.call("slow.wait", {"seconds": 30}, timeout=20))
    await asyncio.sleep(0.3)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    await raises(switchboard.ShuttingDown, call)
    bus.close()


@run_async
async def test_policy_denials_and_refused_tokens(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(POLICY)
    owner = await switchboard.connect(daemon.address)
    await owner.serve("math", {"double": lambda x: 2 * x, "triple": lambda x: 3 * x})
    edge = await switchboard.connect(daemon.address, token=TOKEN)
    assert (await edge.whoami())["principal"] == "token:edge"
    assert await edge.call("math.double", {"x": 2}) == 4
    await raises(switchboard.PermissionDenied, edge.call("math.triple", {"x": 2}), "token:edge may not call")
    await raises(switchboard.PermissionDenied, edge.serve("mine", {"x": lambda: None}))
    try:
        await switchboard.connect(daemon.address, token="a-wrong-token-value-here")
    except switchboard.Refused as err:
        assert err.code == ErrorCode.PERMISSION_DENIED
    else:
        raise AssertionError("a wrong token was admitted")
    owner.close()
    edge.close()


@run_async
async def test_session_level_codes_end_only_the_offending_connection(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)
    await bus.serve("math", {"double": lambda x: 2 * x})

    def goodbye_after(*frames: bytes) -> int:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(5)
            raw.connect(str(daemon.socket))
            for frame in frames:
                raw.sendall(frame)
            data = b""
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                data += chunk
            at = 0
            while at < len(data):
                (length,) = struct.unpack_from("<I", data, at)
                kind, body = data[at + 4], data[at + 5 : at + 4 + length]
                at += 4 + length
                if kind == wire.GOODBYE:
                    return wire.goodbye(body)[0]
            raise AssertionError("no Goodbye")

    version_2 = wire.frame(wire.HELLO, struct.pack("<HI", 2, 0) + wire.text("x") + wire.text(""))
    assert await asyncio.to_thread(goodbye_after, version_2) == ErrorCode.UNSUPPORTED_VERSION
    garbage = wire.frame(99, b"junk")
    code = await asyncio.to_thread(goodbye_after, wire.hello("x", ""), garbage)
    assert code == ErrorCode.PROTOCOL_VIOLATION
    assert type(from_wire(code, "")) is switchboard.ProtocolViolation
    # The well-behaved connection is untouched.
    assert await bus.call("math.double", {"x": 4}) == 8
    bus.close()
