"""Hop records of traced calls, as the Rust client's `switchboard::hops`: a
traced call (`Bus.call_traced`, `switchboard call --trace`) gathers what each
handler along it saw — the deadline left when the request reached it, how
long it took, how it answered. A handler serving a request that asks for
hops (the `sb-hops` header) reports its own and its callees' in a `Hops`
frame just before its answer.

Nothing here runs for a call that did not ask."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field, replace
from typing import Any, List, Mapping, Optional, Tuple

from . import _wire as wire
from .errors import CallError

#: Request header: "report your hop, and ask the calls you make to".
HOPS_REQUEST = "sb-hops"
#: Header key of one hop record in a `Hops` frame.
HOP = "sb-hop"
#: At most this many records travel in one frame (the header limit).
MAX_HOPS = 64


@dataclass(frozen=True)
class Hop:
    """What one handler along a traced call saw."""

    #: 0: the service called; 1: a service it called; …
    depth: int
    service: str
    method: str
    instance: int
    #: Time left before the caller's deadline when the request arrived.
    deadline_ms: int
    #: How long the handler took to answer.
    took_us: int
    #: `ok`, or the kind of the error it answered.
    outcome: str

    def encode(self) -> str:
        return (
            f"{self.depth} {self.service}.{self.method} {self.instance} "
            f"{self.deadline_ms} {self.took_us} {self.outcome}"
        )

    @staticmethod
    def parse(text: str) -> Optional[Hop]:
        parts = text.split(" ")
        if len(parts) != 6 or "." not in parts[1]:
            return None
        service, method = parts[1].rsplit(".", 1)
        try:
            return Hop(int(parts[0]), service, method, int(parts[2]), int(parts[3]), int(parts[4]), parts[5])
        except ValueError:
            return None


@dataclass(frozen=True)
class Traced:
    """A call's decoded reply (or its error) and the hops it passed through."""

    value: Any = None
    error: Optional[CallError] = None
    hops: List[Hop] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


# Where the records of calls made now go: set by a traced call, and around
# a handler whose request asked for hops.
_log: contextvars.ContextVar[Optional[List[Hop]]] = contextvars.ContextVar("switchboard_hops", default=None)


def gathering() -> Optional[List[Hop]]:
    return _log.get()


def gather_into(log: List[Hop]) -> contextvars.Token[Optional[List[Hop]]]:
    return _log.set(log)


def stop_gathering(token: contextvars.Token[Optional[List[Hop]]]) -> None:
    _log.reset(token)


def outgoing(headers: Mapping[str, str]) -> Tuple[Mapping[str, str], Optional[List[Hop]]]:
    """`headers` for a call about to be sent, asking for hops when a traced
    call is gathering them; and the list their records go to."""
    log = _log.get()
    if log is None or HOPS_REQUEST in headers:
        return headers, log
    return {**headers, HOPS_REQUEST: "1"}, log


def records(pairs: List[Tuple[str, str]]) -> List[Hop]:
    """The hop records among a `Hops` frame's headers."""
    return [hop for key, value in pairs if key == HOP and (hop := Hop.parse(value)) is not None]


class Reporting:
    """A handler's own hop while it runs, reported with its answer."""

    def __init__(self, service: str, method: str, instance: int, deadline_ms: int) -> None:
        self.service, self.method, self.instance, self.deadline_ms = service, method, instance, deadline_ms
        self.started = time.monotonic()
        self.log: List[Hop] = []

    def frame(self, req: int, outcome: str) -> bytes:
        """The `Hops` frame: this hop, then its calls' records one level deeper."""
        took_us = int((time.monotonic() - self.started) * 1_000_000)
        own = Hop(0, self.service, self.method, self.instance, self.deadline_ms, took_us, outcome)
        hops = [own] + [replace(hop, depth=hop.depth + 1) for hop in self.log]
        return wire.hops(req, [(HOP, hop.encode()) for hop in hops[:MAX_HOPS]])
