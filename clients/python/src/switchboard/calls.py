"""What a broadcast gathers: one answer per instance the daemon sent it to.

`Gathering` is fed by the bus as `BroadcastStart` and `BroadcastResult`
frames arrive and completes once every listed instance answered, the whole
broadcast failed, or the deadline passed (instances still silent then get a
`Timeout` entry). No I/O here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import msgpack

from .errors import CallError, Timeout, from_wire


@dataclass(frozen=True)
class BroadcastReply:
    """One instance's answer: its decoded reply, or the error it gave. In a
    fleet broadcast, `host` names the host it runs on (`None`: this one),
    and a host that did not answer is one entry with `instance` 0, its
    `missing_instances` and the error saying why."""

    instance: int
    value: Any = None
    error: Optional[CallError] = None
    host: Optional[str] = None
    missing_instances: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class Gathering:
    """A broadcast in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.done: asyncio.Future[List[BroadcastReply]] = loop.create_future()
        self.timeout = timeout
        self.instances: Optional[List[int]] = None
        self.replies: Dict[int, BroadcastReply] = {}

    def start(self, instances: List[int]) -> bool:
        self.instances = instances
        return self._finish_if_complete()

    def result(self, instance: int, code: int, payload: bytes) -> bool:
        if code == 0:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False) if payload else None
            self.replies[instance] = BroadcastReply(instance, value)
        else:
            self.replies[instance] = BroadcastReply(instance, error=from_wire(code, payload.decode(errors="replace")))
        return self._finish_if_complete()

    def fail(self, error: CallError) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def expire(self) -> None:
        """The deadline passed: silent instances get a `Timeout` entry."""
        if self.instances is None:
            self.fail(Timeout(f"no answer within {self.timeout:g} s"))
            return
        for instance in self.instances:
            if instance not in self.replies:
                self.replies[instance] = BroadcastReply(instance, error=Timeout(f"no reply within {self.timeout:g} s"))
        self._finish_if_complete()

    def _finish_if_complete(self) -> bool:
        if self.instances is None or any(i not in self.replies for i in self.instances):
            return False
        if not self.done.done():
            self.done.set_result([self.replies[i] for i in self.instances])
        return True
