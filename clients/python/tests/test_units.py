"""The pure parts, without a daemon: frames against docs/protocol.md's
example, the naming rules, and how a function's hints bind arguments."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import msgpack
import pytest

import switchboard
from switchboard import _wire as wire
from switchboard import names
from switchboard.serving import Method


def test_a_call_frame_is_byte_for_byte_the_protocol_documents_example() -> None:
    prefix = wire.call_prefix(*names.target("demo.echo"))
    frame = wire.call(1, 30000, 0, prefix, wire.NO_HEADERS, b"\xc0")
    documented = bytes.fromhex("1e000000 06 01000000 30750000 0000000000000000 0464656d6f 046563686f 0000 c0")
    assert frame == documented


def test_request_and_message_frames_decode_with_headers_and_callers() -> None:
    caller = wire._U64.pack(7) + wire._U32.pack(1000) + wire._U32.pack(42) + wire.name(b"user:alice")
    head = wire.headers({"trace": "abc"})
    body = wire._U32.pack(9) + wire._U32.pack(500) + wire._U64.pack(3) + caller + wire.name(b"echo") + head + b"xy"
    request = wire.request(body)
    assert (request.req, request.timeout_ms, request.instance, request.method) == (9, 500, 3, "echo")
    assert request.caller == wire.Caller(7, 1000, 42, "user:alice")
    assert (request.headers, request.payload) == ({"trace": "abc"}, b"xy")
    body = wire._U32.pack(5) + b"\x01" + caller + wire.name(b"db.primary") + wire.NO_HEADERS + msgpack.packb("b")
    sid, message = wire.message(body)
    assert (sid, message.topic, message.value, message.retained) == (5, "db.primary", "b", True)
    with pytest.raises(wire.ProtocolError):
        wire.request(body[:10])


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("billing", True),
        ("inventory.eu", True),
        ("$sys.registry", True),
        ("a-b_c.d1", True),
        ("Billing", False),
        ("a..b", False),
        ("1abc", False),
        (".a", False),
        ("a.$b", False),
        ("x" * 129, False),
    ],
)
def test_service_names_follow_the_protocol(name: str, ok: bool) -> None:
    if ok:
        assert names.service(name) == name.encode()
    else:
        with pytest.raises(switchboard.InvalidName):
            names.service(name)


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [("orders.*", True), ("orders.>", True), ("$sys.x", True), ("a.>.b", False), ("a..b", False), ("a b", False)],
)
def test_patterns_follow_the_protocol(pattern: str, ok: bool) -> None:
    if ok:
        names.pattern(pattern)
    else:
        with pytest.raises(switchboard.InvalidName):
            names.pattern(pattern)
    with pytest.raises(switchboard.InvalidName):
        names.topic("orders.*")


def test_a_functions_hints_are_its_signature_and_its_argument_checks() -> None:
    def charge(account: str, cents: int, tags: List[str], note: Optional[str] = None) -> Dict[str, int]:
        return {}

    method = Method("charge", charge)
    assert (
        method.signature == "charge(account: str, cents: int, tags: List[str], note: Optional[str]) -> Dict[str, int]"
    )
    args = msgpack.packb({"account": "a", "cents": 5, "tags": ["x"]})
    assert method.bind(args) == {"account": "a", "cents": 5, "tags": ["x"]}
    for bad, why in [
        ({"account": "a", "cents": True, "tags": []}, "argument `cents` of charge (a boolean): expected int"),
        ({"account": "a", "cents": 5, "tags": [1]}, "argument `tags` of charge (an array): expected List[str]"),
        ({"cents": 5, "tags": []}, "argument `account` of charge is missing"),
    ]:
        with pytest.raises(switchboard.BadArguments, match=re.escape(why)):
            method.bind(msgpack.packb(bad))
    with pytest.raises(switchboard.BadArguments, match="not MessagePack"):
        method.bind(b"\xc1")
    with pytest.raises(TypeError, match="by name"):
        Method("positional", lambda *values: None)
