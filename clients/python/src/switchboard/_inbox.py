"""What a subscription and a consumer share: items the bus hands over
without ever waiting, taken by an application that may wait for them.

The bus calls `_push`-style methods of the subclasses and `_end`; the
application awaits `_wait`. Nothing here sends anything.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Deque, Generic, Optional, TypeVar

from .errors import CallError

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self) -> None:
        self._items: Deque[T] = collections.deque()
        self._waiter: Optional[asyncio.Future[None]] = None
        self._closed = False
        #: Why the daemon ended it (a policy reload), if it did.
        self.ended: Optional[CallError] = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, why: Optional[CallError]) -> None:
        """No more items will come (closed, the bus closed, or the daemon ended it)."""
        self._closed = True
        self.ended = why
        self._wake()

    async def _wait(self, timeout: Optional[float]) -> bool:
        """Waits for an item or the end; False once `timeout` passed."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._waiter = None
