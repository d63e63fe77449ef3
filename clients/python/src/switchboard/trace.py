"""Trace context that travels, as the Rust client's `switchboard::trace`:
every call, notification, broadcast, publication and queue message carries a
W3C `traceparent` header. Made while serving a request it continues that
request's trace (same trace id, a new span id); made anywhere else it starts
a new trace. A header the caller set itself is kept.

Handlers read theirs with `current()`; `service.log` records its trace id."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from .serving import current_request

#: The header key, as W3C names it.
TRACEPARENT = "traceparent"

_FORMAT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Ids must be unique, not secret: a generator seeded from the OS is enough.
_ids = random.Random()
_enabled = os.environ.get("SWITCHBOARD_TRACE") != "0"


def set_enabled(on: bool) -> None:
    """Turns adding trace context to what this process sends on or off (on
    unless `SWITCHBOARD_TRACE=0`). Off, a caller's own `traceparent` still
    travels and handlers still continue the traces of requests with one."""
    global _enabled
    _enabled = on


@dataclass(frozen=True)
class TraceParent:
    """One `traceparent` value."""

    trace_id: int
    parent_id: int
    flags: int = 1

    @staticmethod
    def parse(text: str) -> Optional[TraceParent]:
        """A valid version-00 value, else `None` (W3C: start a new trace)."""
        match = _FORMAT.fullmatch(text)
        if match is None:
            return None
        trace_id, parent_id = int(match[1], 16), int(match[2], 16)
        if trace_id == 0 or parent_id == 0:
            return None
        return TraceParent(trace_id, parent_id, int(match[3], 16))

    @staticmethod
    def root() -> TraceParent:
        return TraceParent(_ids.getrandbits(128) or 1, _ids.getrandbits(64) or 1)

    def child(self) -> TraceParent:
        """The same trace, a new span."""
        return TraceParent(self.trace_id, _ids.getrandbits(64) or 1, self.flags)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def __str__(self) -> str:
        return f"00-{self.trace_id:032x}-{self.parent_id:016x}-{self.flags:02x}"


def current() -> Optional[TraceParent]:
    """The trace context of the request the running handler serves."""
    request = current_request()
    if request is None:
        return None
    value = request.headers.get(TRACEPARENT)
    return TraceParent.parse(value) if value is not None else None


def outgoing(headers: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    """`headers` with the `traceparent` an outgoing message should carry."""
    if headers and TRACEPARENT in headers:
        return headers
    parent = current()
    if parent is None and not _enabled:
        return headers or {}
    value = str(parent.child() if parent is not None else TraceParent.root())
    with_trace: Dict[str, str] = dict(headers) if headers else {}
    with_trace[TRACEPARENT] = value
    return with_trace
