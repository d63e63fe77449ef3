"""Publish/subscribe from the client's side: what a subscription yields.

A subscription's messages wait in a bounded inbox until the application
takes them. The connection never waits for the application: when the inbox
is full the oldest message is dropped, and the next item the application
takes is `Lagged(n)` — counting drops here and those the daemon reported for
its own backlog. Drops made here are reported to the daemon (a `Lagged`
frame), so `switchboard ls` shows them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Optional, Union

from . import _wire as wire
from . import names
from ._inbox import Inbox
from ._wire import Message

if TYPE_CHECKING:
    from .bus import Bus

DEFAULT_SUBSCRIPTION_CAPACITY = 8192


@dataclass(frozen=True)
class Lagged:
    """This many messages were dropped before the next one (the subscriber did not keep up)."""

    missed: int


Item = Union[Message, Lagged]


class Subscription(Inbox[Item]):
    """An async iterator of `Message` and `Lagged` items; `close()` unsubscribes.

    It ends when closed, when the bus closes, or when the daemon ends it
    (a policy reload no longer allows it: `ended` says why).
    """

    @classmethod
    async def open(cls, bus: Bus, pattern: str, capacity: int) -> Subscription:
        """Subscribes (`Bus.subscribe`): the first free sid, kept for reconnects."""
        encoded = names.pattern(pattern)
        sid = 1
        while sid in bus._subscriptions:
            sid += 1
        sub = cls(bus, sid, pattern, capacity)
        bus._subscriptions[sid] = sub
        try:
            await bus._request(lambda req: wire.subscribe(req, sid, encoded))
        except BaseException:
            bus._subscriptions.pop(sid, None)
            raise
        return sub

    def __init__(self, bus: Bus, sid: int, pattern: str, capacity: int) -> None:
        super().__init__()
        self.sid = sid
        self.pattern = pattern
        self._bus = bus
        self._capacity = max(1, capacity)
        self._dropped = 0

    # Called by the bus, on the event loop; never waits.
    def _push(self, item: Item) -> None:
        items = self._items
        if len(items) >= self._capacity:
            oldest = items.popleft()
            dropped = oldest.missed if isinstance(oldest, Lagged) else 1
            self._dropped += dropped
            if isinstance(oldest, Message):
                self._bus._write(wire.lagged(self.sid, 1))
        items.append(item)
        self._wake()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        if self._items and not self._dropped and isinstance(self._items[0], Message):
            return self._items.popleft()
        item = await self.next()
        if item is None:
            raise StopAsyncIteration
        return item

    async def next(self, timeout: Optional[float] = None) -> Optional[Item]:
        """The next item; `None` once the subscription ended (or `timeout` passed)."""
        while True:
            if self._dropped:
                missed, self._dropped = self._dropped, 0
                return Lagged(missed)
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Lagged):
                    missed = item.missed
                    while self._items and isinstance(self._items[0], Lagged):
                        following = self._items.popleft()
                        assert isinstance(following, Lagged)
                        missed += following.missed
                    return Lagged(missed)
                return item
            if self._closed or not await self._wait(timeout):
                return None

    async def close(self) -> None:
        """Unsubscribes; items already received can still be read."""
        if not self._closed:
            self._closed = True
            bus = self._bus
            if bus._subscriptions.pop(self.sid, None) is not None and bus.connected:
                await bus._request(lambda req: wire.unsubscribe(req, self.sid))
            self._wake()
