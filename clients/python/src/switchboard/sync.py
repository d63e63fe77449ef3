"""A small synchronous facade for scripts: the same operations as `Bus`,
blocking, with no `async` in sight.

    from switchboard import sync
    with sync.connect() as bus:
        print(bus.call("billing.charge", {"account": "a", "cents": 5}))

The asynchronous bus runs on an event loop in a background thread this
facade owns; every method hands its coroutine to that loop and waits for
the result. Served methods run on that thread too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, Dict, Iterator, List, Mapping, Optional, TypeVar

from .bus import DEFAULT_TIMEOUT
from .bus import Bus as AsyncBus
from .bus import connect as async_connect
from .calls import BroadcastReply
from .queues import Delivery
from .serving import Handler, Service
from .topics import Item, Subscription

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="switchboard-sync", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SyncSubscription:
    """A subscription read by blocking: `next(timeout)` or a `for` loop."""

    def __init__(self, runner: _Loop, subscription: Subscription) -> None:
        self._runner = runner
        self._subscription = subscription

    def next(self, timeout: Optional[float] = None) -> Optional[Item]:
        """The next `Message` or `Lagged`; `None` once ended or after `timeout` seconds."""
        return self._runner.run(self._subscription.next(timeout))

    def __iter__(self) -> Iterator[Item]:
        while True:
            item = self.next()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self._runner.run(self._subscription.close())


class Bus:
    """A blocking connection to the daemon. Use `connect()` to make one."""

    def __init__(self, runner: _Loop, bus: AsyncBus) -> None:
        self._runner = runner
        self._bus = bus

    @property
    def session(self) -> Optional[int]:
        return self._bus.session

    def call(self, target: str, args: Any = None, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> Any:
        """See `switchboard.Bus.call`."""
        return self._runner.run(self._bus.call(target, args, timeout=timeout, **options))

    def notify(self, target: str, args: Any = None, **options: Any) -> None:
        self._runner.run(self._bus.notify(target, args, **options))

    def broadcast(
        self, target: str, args: Any = None, *, timeout: float = DEFAULT_TIMEOUT, **options: Any
    ) -> List[BroadcastReply]:
        return self._runner.run(self._bus.broadcast(target, args, timeout=timeout, **options))

    def publish(self, topic: str, value: Any = None, **options: Any) -> None:
        self._runner.run(self._bus.publish(topic, value, **options))

    def subscribe(self, pattern: str, **options: Any) -> SyncSubscription:
        return SyncSubscription(self._runner, self._runner.run(self._bus.subscribe(pattern, **options)))

    def serve(self, service: str, methods: Mapping[str, Handler], **options: Any) -> Service:
        """Registers `service`; its handlers run on the facade's loop thread."""
        return self._runner.run(self._bus.serve(service, methods, **options))

    def put(self, queue: str, value: Any = None, **options: Any) -> int:
        """Puts a message on `queue`; returns its id once it is on disk."""
        return self._runner.run(self._bus.queue(queue).put(value, **options))

    def get(self, queue: str, count: int = 1, *, wait: float = 5.0) -> List[Delivery]:
        """Takes up to `count` messages from `queue` (waiting at most `wait`
        seconds for each) and acks them once taken."""
        return self._runner.run(_get(self._bus, queue, count, wait))

    def whoami(self) -> Dict[str, Any]:
        return self._runner.run(self._bus.whoami())

    def services(self) -> List[Dict[str, Any]]:
        return self._runner.run(self._bus.services())

    def flush(self) -> None:
        self._runner.run(self._bus.flush())

    def close(self) -> None:
        self._runner.loop.call_soon_threadsafe(self._bus.close)
        self._runner.stop()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


async def _get(bus: AsyncBus, queue: str, count: int, wait: float) -> List[Delivery]:
    consumer = await bus.queue(queue).consume(prefetch=count)
    taken: List[Delivery] = []
    try:
        while len(taken) < count:
            delivery = await consumer.next(wait)
            if delivery is None:
                break
            await delivery.ack()
            taken.append(delivery)
    finally:
        await consumer.close()
    return taken


def connect(address: Optional[str] = None, *, name: Optional[str] = None, token: Optional[str] = None) -> Bus:
    """Connects as `switchboard.connect` does, and returns a blocking `Bus`."""
    runner = _Loop()
    try:
        bus = runner.run(async_connect(address, name=name, token=token))
    except BaseException:
        runner.stop()
        raise
    return Bus(runner, bus)
