"""The frames of docs/protocol.md: encoding what a client sends and decoding
what the daemon sends. Pure functions over bytes; no I/O, no state.

A frame is `len:u32le kind:u8 body`; `len` counts `kind` and the body.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import msgpack

PROTOCOL_VERSION = 1
HANDSHAKE_MAX_FRAME = 64 * 1024

HELLO = 1
WELCOME = 2
REGISTER = 3
REGISTERED = 4
UNREGISTER = 5
CALL = 6
NOTIFY = 7
REQUEST = 8
REPLY = 9
ERROR = 10
WATCH = 11
EVENT = 12
GOODBYE = 13
BROADCAST = 14
BROADCAST_START = 15
BROADCAST_RESULT = 16
SUBSCRIBE = 17
UNSUBSCRIBE = 18
PUBLISH = 19
MESSAGE = 20
LAGGED = 21
QUEUE_PUT = 22
QUEUE_CONSUME = 23
QUEUE_CANCEL = 24
QUEUE_STOP = 31
QUEUE_DELIVERY = 25
QUEUE_ACK = 26
QUEUE_NACK = 27
REVOKE = 28
ENDED = 29
HOPS = 30

NO_HEADERS = b"\x00\x00"

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEAD = struct.Struct("<IB")
_ID_TIMEOUT_INSTANCE = struct.Struct("<IIQ")
_CALLER = struct.Struct("<QII")


class ProtocolError(Exception):
    """The daemon sent a frame this client cannot read."""


def millis(seconds: float, least: int = 0) -> int:
    """Seconds as a `u32` count of milliseconds (clamped to the field)."""
    return min(0xFFFFFFFF, max(least, int(seconds * 1000)))


def frame(kind: int, body: bytes) -> bytes:
    return _HEAD.pack(len(body) + 1, kind) + body


def name(data: bytes) -> bytes:
    return _U8.pack(len(data)) + data


def text(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("text longer than 65,535 bytes")
    return _U16.pack(len(data)) + data


def headers(pairs: Optional[Mapping[str, str]]) -> bytes:
    return header_list(list(pairs.items())) if pairs else NO_HEADERS


def header_list(pairs: List[Tuple[str, str]]) -> bytes:
    """A header block whose keys may repeat (as `Hops` frames need)."""
    parts = [_U16.pack(len(pairs))]
    for key, value in pairs:
        parts.append(name(key.encode()))
        parts.append(text(value))
    return b"".join(parts)


def hello(client_name: str, credential: str) -> bytes:
    return frame(HELLO, struct.pack("<HI", PROTOCOL_VERSION, 0) + text(client_name) + text(credential))


def call_prefix(service: bytes, method: bytes) -> bytes:
    """What follows `id timeout instance` in every Call to one target."""
    return name(service) + name(method)


def call(req: int, timeout_ms: int, instance: int, prefix: bytes, head: bytes, payload: bytes) -> bytes:
    body_len = 16 + len(prefix) + len(head) + len(payload) + 1
    return b"".join(
        (_HEAD.pack(body_len, CALL), _ID_TIMEOUT_INSTANCE.pack(req, timeout_ms, instance), prefix, head, payload)
    )


def notify(everyone: bool, instance: int, prefix: bytes, head: bytes, payload: bytes) -> bytes:
    return frame(NOTIFY, struct.pack("<BQ", int(everyone), instance) + prefix + head + payload)


def broadcast(req: int, timeout_ms: int, prefix: bytes, head: bytes, payload: bytes) -> bytes:
    return frame(BROADCAST, struct.pack("<II", req, timeout_ms) + prefix + head + payload)


def reply(req: int, payload: bytes) -> bytes:
    return b"".join((_HEAD.pack(5 + len(payload), REPLY), _U32.pack(req), payload))


def hops(req: int, pairs: List[Tuple[str, str]]) -> bytes:
    return frame(HOPS, _U32.pack(req) + header_list(pairs))


def hops_body(body: bytes) -> Tuple[int, List[Tuple[str, str]]]:
    cursor = Cursor(body)
    req = cursor.u32()
    pairs = cursor.header_pairs()
    cursor.end()
    return req, pairs


def error(req: int, code: int, message: str) -> bytes:
    data = message.encode()[:0xFFFF].decode(errors="ignore")
    return frame(ERROR, struct.pack("<IH", req, code) + text(data))


def register(req: int, service: bytes, methods: List[Tuple[bytes, str]]) -> bytes:
    parts = [struct.pack("<I", req), name(service), _U16.pack(len(methods))]
    for method, signature in methods:
        parts.append(name(method))
        parts.append(text(signature))
    return frame(REGISTER, b"".join(parts))


def unregister(req: int, instance: int) -> bytes:
    return frame(UNREGISTER, struct.pack("<IQ", req, instance))


def watch(req: int) -> bytes:
    return frame(WATCH, _U32.pack(req))


def subscribe(req: int, sid: int, pattern: bytes) -> bytes:
    return frame(SUBSCRIBE, struct.pack("<II", req, sid) + name(pattern))


def unsubscribe(req: int, sid: int) -> bytes:
    return frame(UNSUBSCRIBE, struct.pack("<II", req, sid))


def publish(retain: bool, topic_field: bytes, head: bytes, payload: bytes) -> bytes:
    """`Publish`; `topic_field` is the topic already as a `name` field (`name(topic)`)."""
    body_len = 2 + len(topic_field) + len(head) + len(payload)
    return b"".join((_HEAD.pack(body_len, PUBLISH), b"\x01" if retain else b"\x00", topic_field, head, payload))


def lagged(sid: int, missed: int) -> bytes:
    return frame(LAGGED, struct.pack("<IQ", sid, missed))


def queue_put(req: int, priority: int, ttl_ms: int, queue: bytes, dedup_id: str, head: bytes, payload: bytes) -> bytes:
    body = struct.pack("<IBI", req, priority, ttl_ms) + name(queue) + text(dedup_id) + head + payload
    return frame(QUEUE_PUT, body)


def queue_consume(req: int, consumer: int, prefetch: int, queue: bytes) -> bytes:
    return frame(QUEUE_CONSUME, struct.pack("<III", req, consumer, prefetch) + name(queue))


def queue_cancel(req: int, consumer: int) -> bytes:
    return frame(QUEUE_CANCEL, struct.pack("<II", req, consumer))


def queue_stop(req: int, consumer: int) -> bytes:
    return frame(QUEUE_STOP, struct.pack("<II", req, consumer))


def queue_ack(req: int, tag: int) -> bytes:
    return frame(QUEUE_ACK, struct.pack("<IQ", req, tag))


def queue_nack(req: int, tag: int, delay_ms: int) -> bytes:
    return frame(QUEUE_NACK, struct.pack("<IQI", req, tag, delay_ms))


class Caller(NamedTuple):
    """Who sent a request or publication, as the daemon verified it."""

    session: int
    uid: int
    pid: int
    principal: str


class Cursor:
    """Reads the fields of one frame body in order."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def _take(self, count: int) -> bytes:
        end = self.at + count
        if end > len(self.data):
            raise ProtocolError("truncated frame")
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def name(self) -> str:
        return self._take(self.u8()).decode()

    def text(self) -> str:
        return self._take(self.u16()).decode()

    def headers(self) -> Dict[str, str]:
        return dict(self.header_pairs())

    def header_pairs(self) -> List[Tuple[str, str]]:
        return [(self.name(), self.text()) for _ in range(self.u16())]

    def caller(self) -> Caller:
        session, uid, pid = _CALLER.unpack(self._take(16))
        return Caller(session, uid, pid, self.name())

    def rest(self) -> bytes:
        chunk = self.data[self.at :]
        self.at = len(self.data)
        return chunk

    def end(self) -> None:
        if self.at != len(self.data):
            raise ProtocolError("trailing bytes after the last field")


class Welcome(NamedTuple):
    session: int
    max_frame: int
    max_inflight: int


def welcome(body: bytes) -> Welcome:
    cursor = Cursor(body)
    cursor.u16()
    cursor.u32()
    result = Welcome(cursor.u64(), cursor.u32(), cursor.u32())
    cursor.end()
    return result


class Request(NamedTuple):
    req: int
    timeout_ms: int
    instance: int
    caller: Caller
    method: str
    headers: Dict[str, str]
    payload: bytes


_REQUEST_HEAD = struct.Struct("<IIQQIIB")
_MESSAGE_HEAD = struct.Struct("<IBQIIB")
_callers: Dict[bytes, Caller] = {}
_names: Dict[bytes, str] = {}


def _caller(key: bytes, session: int, uid: int, pid: int, principal: bytes) -> Caller:
    """The same peer sends many frames: its `Caller` is made once (bounded cache)."""
    caller = _callers.get(key)
    if caller is None:
        if len(_callers) >= 4096:
            _callers.clear()
        caller = _callers[key] = Caller(session, uid, pid, principal.decode())
    return caller


def _name(raw: bytes) -> str:
    """Topic and method names repeat: each is decoded once (bounded cache)."""
    name = _names.get(raw)
    if name is None:
        if len(_names) >= 4096:
            _names.clear()
        name = _names[raw] = raw.decode()
    return name


def _tail(body: bytes, at: int) -> Tuple[Dict[str, str], bytes]:
    """`headers payload` from `at` to the end of the body."""
    if len(body) < at + 2:
        raise ProtocolError("truncated frame")
    if body[at] == 0 and body[at + 1] == 0:
        return {}, body[at + 2 :]
    cursor = Cursor(body)
    cursor.at = at
    return cursor.headers(), cursor.rest()


def request(body: bytes) -> Request:
    """`Request`, read without a `Cursor`: it is the hot path of every served call."""
    try:
        req, timeout_ms, instance, session, uid, pid, plen = _REQUEST_HEAD.unpack_from(body)
        at = 33 + plen
        caller = _caller(body[16:at], session, uid, pid, body[33:at])
        mlen = body[at]
        method = _name(body[at + 1 : at + 1 + mlen])
        headers, payload = _tail(body, at + 1 + mlen)
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise ProtocolError(f"malformed Request: {err}") from None
    return Request(req, timeout_ms, instance, caller, method, headers, payload)


class Message(NamedTuple):
    """A message received on a subscription (`switchboard.Message`)."""

    topic: str
    payload: bytes
    headers: Dict[str, str]
    #: Who published it, as the daemon verified it.
    publisher: Caller
    #: A retained value replayed when the subscription started.
    retained: bool

    @property
    def value(self) -> Any:
        """The payload decoded from MessagePack (an empty payload is `None`)."""
        return msgpack.unpackb(self.payload, raw=False, strict_map_key=False) if self.payload else None


def message(body: bytes) -> Tuple[int, Message]:
    """`Message`, read without a `Cursor`: it is the hot path of every subscription."""
    try:
        sid, retained, session, uid, pid, plen = _MESSAGE_HEAD.unpack_from(body)
        at = 22 + plen
        publisher = _caller(body[5:at], session, uid, pid, body[22:at])
        tlen = body[at]
        topic = _name(body[at + 1 : at + 1 + tlen])
        headers, payload = _tail(body, at + 1 + tlen)
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise ProtocolError(f"malformed Message: {err}") from None
    return sid, Message(topic, payload, headers, publisher, retained == 1)


class Delivery(NamedTuple):
    consumer: int
    tag: int
    id: int
    attempt: int
    priority: int
    headers: Dict[str, str]
    payload: bytes


def delivery(body: bytes) -> Delivery:
    cursor = Cursor(body)
    consumer, tag, message_id, attempt, priority = struct.unpack("<IQQIB", cursor._take(25))
    return Delivery(consumer, tag, message_id, attempt, priority, cursor.headers(), cursor.rest())


def error_body(body: bytes) -> Tuple[int, int, str]:
    """`Error`: (id, code, message)."""
    cursor = Cursor(body)
    result = (cursor.u32(), cursor.u16(), cursor.text())
    cursor.end()
    return result


def goodbye(body: bytes) -> Tuple[int, str]:
    cursor = Cursor(body)
    return cursor.u16(), cursor.text()
