"""Durable queues from the client's side: `Queue` (declare, put, consume,
peek, purge, delete), `Consumer` and `Delivery`.

A put returns only once the daemon has the message on disk; a delivery is
acked or nacked once; a consumer's unacknowledged deliveries return to the
queue when it is closed or its connection drops.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, List, Mapping, Optional

import msgpack

from . import _wire as wire
from . import names, trace
from ._inbox import Inbox

if TYPE_CHECKING:
    from .bus import Bus

QUEUES_SERVICE = "$sys.queues"
DEFAULT_PREFETCH = 16


@dataclass
class Delivery:
    """One delivered message; `ack()` or `nack()` it."""

    id: int
    attempt: int
    priority: int
    headers: Dict[str, str]
    payload: bytes
    tag: int
    _bus: Bus = field(repr=False)

    @property
    def value(self) -> Any:
        """The payload decoded from MessagePack (an empty payload is `None`)."""
        return msgpack.unpackb(self.payload, raw=False) if self.payload else None

    async def ack(self) -> None:
        """Done: returns once the removal is on disk (`StaleDelivery` if it had returned to the queue)."""
        tag = self.tag
        await self._bus._request(lambda req: wire.queue_ack(req, tag))

    async def nack(self, delay: float = 0.0) -> None:
        """Not done: the message returns to the queue after `delay` seconds."""
        tag, delay_ms = self.tag, wire.millis(delay)
        await self._bus._request(lambda req: wire.queue_nack(req, tag, delay_ms))


class Consumer(Inbox[Delivery]):
    """An async iterator of deliveries; `close()` stops consuming.

    It holds at most `prefetch` deliveries (the daemon sends no more until
    some are acked or nacked)."""

    def __init__(self, bus: Bus, consumer_id: int, queue: str, prefetch: int) -> None:
        super().__init__()
        self.id = consumer_id
        self.queue = queue
        self.prefetch = prefetch
        self.stopped = False
        self._bus = bus

    def _push(self, delivery: Delivery) -> None:
        self._items.append(delivery)
        self._wake()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.next()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def next(self, timeout: Optional[float] = None) -> Optional[Delivery]:
        """The next delivery; `None` once the consumer ended (or `timeout` passed)."""
        while not self._items:
            if self._closed or not await self._wait(timeout):
                return None
        return self._items.popleft()

    async def stop(self) -> None:
        """Asks for no more deliveries; those already received stay with this
        consumer, to ack or nack, until it is closed. Deliveries sent before
        the stop took effect have all arrived when this returns (`next` gives
        them). A stopped consumer does not come back after a reconnect."""
        self.stopped = True
        await self._bus._request(lambda req: wire.queue_stop(req, self.id))

    async def close(self) -> None:
        """Stops consuming; deliveries not yet acked return to the queue."""
        if not self._closed:
            self._end(None)
            bus = self._bus
            if bus._consumers.pop(self.id, None) is not None and bus.connected:
                await bus._request(lambda req: wire.queue_cancel(req, self.id))


class Queue:
    """A named durable queue (validated; nothing is sent until used)."""

    def __init__(self, bus: Bus, name: str) -> None:
        names.queue(name)
        self.name = name
        self._bus = bus

    async def declare(
        self,
        *,
        max_messages: Optional[int] = None,
        max_bytes: Optional[int] = None,
        overflow: Optional[str] = None,
        max_attempts: Optional[int] = None,
        visibility_timeout: Optional[float] = None,
        dedup_window: Optional[float] = None,
        default_ttl: Optional[float] = None,
        fleet: bool = False,
    ) -> None:
        """Creates the queue, or changes its options (every option may be omitted).

        With ``fleet=True`` the queue lives on the fleet's JetStream, replicated
        and shared by every host (the daemon must have joined a fleet).
        """
        options: Dict[str, Any] = {
            "max_messages": max_messages,
            "max_bytes": max_bytes,
            "overflow": overflow,
            "max_attempts": max_attempts,
            "visibility_timeout_ms": _ms(visibility_timeout),
            "dedup_window_ms": _ms(dedup_window),
            "default_ttl_ms": _ms(default_ttl),
        }
        options = {key: value for key, value in options.items() if value is not None}
        await self._bus.call(f"{QUEUES_SERVICE}.declare", {"queue": self.name, "options": options, "fleet": fleet})

    async def put(
        self,
        value: Any = None,
        *,
        priority: int = 0,
        ttl: Optional[float] = None,
        id: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
    ) -> int:
        """Puts a message (MessagePack of `value`, or `value` itself with `raw=True`).

        Returns the message id once it is on disk. `id` suppresses duplicates
        within the queue's window; `priority` is 0-9, higher first.
        """
        if not 0 <= priority <= 9:
            raise ValueError(f"priority {priority} is out of range: 0-9")
        head = names.header_block(trace.outgoing(headers))
        payload = value if raw else msgpack.packb(value, use_bin_type=True)
        ttl_ms = 0 if ttl is None else wire.millis(ttl, 1)
        queue, dedup_id = self.name.encode(), id or ""
        reply = await self._bus._request(
            lambda req: wire.queue_put(req, priority, ttl_ms, queue, dedup_id, head, payload)
        )
        return int(struct.unpack("<Q", reply)[0])

    async def consume(self, prefetch: int = DEFAULT_PREFETCH) -> Consumer:
        """Starts consuming: at most `prefetch` deliveries unacknowledged at once."""
        bus, prefetch = self._bus, max(1, prefetch)
        consumer_id = 1
        while consumer_id in bus._consumers:
            consumer_id += 1
        consumer = Consumer(bus, consumer_id, self.name, prefetch)
        bus._consumers[consumer_id] = consumer
        queue = self.name.encode()
        try:
            await bus._request(lambda req: wire.queue_consume(req, consumer_id, prefetch, queue))
        except BaseException:
            bus._consumers.pop(consumer_id, None)
            raise
        return consumer

    async def peek(self, count: int = 10) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._bus.call(
            f"{QUEUES_SERVICE}.peek", {"queue": self.name, "count": count}
        )
        return result

    async def purge(self) -> int:
        """Removes every waiting message; returns how many, once on disk."""
        removed: int = await self._bus.call(f"{QUEUES_SERVICE}.purge", {"queue": self.name})
        return removed

    async def delete(self) -> None:
        """Removes an empty queue nobody consumes from."""
        await self._bus.call(f"{QUEUES_SERVICE}.delete", {"queue": self.name})


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(seconds * 1000)
