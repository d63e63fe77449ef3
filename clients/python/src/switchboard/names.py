"""The naming rules of docs/protocol.md ("Names", "Topics"), checked before
anything is sent: the daemon ends a connection that sends a malformed name,
so a bad name must fail here, as `InvalidName`, and nowhere else.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Tuple

from . import _wire
from .errors import InvalidName

MAX_SERVICE_NAME = 128
MAX_METHOD_NAME = 64
MAX_TOPIC = 255
MAX_HEADERS = 64
MAX_HEADER_VALUE = 4096

_SERVICE_TOKEN = r"[a-z][a-z0-9_-]*"
_SERVICE = re.compile(rf"\$?{_SERVICE_TOKEN}(\.{_SERVICE_TOKEN})*\Z")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOPIC_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")
_HEADER_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def service(name: str) -> bytes:
    """A service name as wire bytes: dotted lowercase tokens, `$` only reserved."""
    if not name or len(name) > MAX_SERVICE_NAME or not _SERVICE.match(name):
        raise InvalidName(
            f"invalid service name {name!r}: dotted tokens of a-z 0-9 _ -, each starting "
            f"with a letter, at most {MAX_SERVICE_NAME} bytes"
        )
    return name.encode()


def queue(name: str) -> bytes:
    if name.startswith("$"):
        raise InvalidName(f"invalid queue name {name!r}: queue names cannot start with `$`")
    return service(name)


def method(name: str) -> bytes:
    if not name or len(name) > MAX_METHOD_NAME or not _METHOD.match(name):
        raise InvalidName(
            f"invalid method name {name!r}: a letter or `_`, then letters, digits or `_`, "
            f"at most {MAX_METHOD_NAME} bytes"
        )
    return name.encode()


def target(text: str) -> Tuple[bytes, bytes]:
    """`"inventory.eu.reserve"` → (service `inventory.eu`, method `reserve`)."""
    service_part, dot, method_part = text.rpartition(".")
    if not dot:
        raise InvalidName(f"invalid target {text!r}: expected SERVICE.METHOD")
    return service(service_part), method(method_part)


def _topic(name: str, pattern: bool) -> bytes:
    what = "pattern" if pattern else "topic"
    data = name.encode()
    if not data or len(data) > MAX_TOPIC:
        raise InvalidName(f"invalid {what} {name!r}: 1 to {MAX_TOPIC} bytes")
    tokens = name.split(".")
    for index, token in enumerate(tokens):
        if pattern and (token == "*" or (token == ">" and index == len(tokens) - 1)):
            continue
        body = token[1:] if index == 0 and token.startswith("$") and len(token) > 1 else token
        if not _TOPIC_TOKEN.match(body):
            why = (
                "wildcards are only allowed in subscription patterns, `>` only last"
                if "*" in token or ">" in token
                else "tokens hold only letters, digits, `_` and `-`, separated by single dots"
            )
            raise InvalidName(f"invalid {what} {name!r}: {why}")
    return data


def topic(name: str) -> bytes:
    return _topic(name, pattern=False)


def pattern(name: str) -> bytes:
    return _topic(name, pattern=True)


def headers(pairs: Optional[Mapping[str, str]]) -> Optional[Mapping[str, str]]:
    """Checks a header map against the wire's limits."""
    if not pairs:
        return None
    if len(pairs) > MAX_HEADERS:
        raise InvalidName(f"more than {MAX_HEADERS} headers")
    for key, value in pairs.items():
        if not _HEADER_KEY.match(key):
            raise InvalidName(f"invalid header key {key!r}: 1-64 letters, digits, `_`, `-` or `.`")
        if len(value.encode()) > MAX_HEADER_VALUE:
            raise InvalidName(f"value of header {key!r} is longer than {MAX_HEADER_VALUE} bytes")
    return pairs


def header_block(pairs: Optional[Mapping[str, str]]) -> bytes:
    """Headers checked against the wire's limits, as their wire field."""
    return _wire.headers(headers(pairs)) if pairs else _wire.NO_HEADERS
