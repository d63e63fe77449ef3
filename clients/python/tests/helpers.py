"""Helper processes the tests start (and kill): `python helpers.py ROLE [ARGS]`.

Each role connects to `$SWITCHBOARD_ADDR`, prints one line once it is
ready (what the test waits for), then does its part until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Callable, Coroutine, Dict

import switchboard
from switchboard import service


async def slow_service() -> None:
    """Serves `slow.wait(seconds)`; killed mid-call by the test."""
    bus = await switchboard.connect(name="slow-helper")

    async def wait(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "waited"

    await bus.serve("slow", {"wait": wait})
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def consumer(queue: str) -> None:
    """Takes one delivery of `queue`, prints its id, and never acks it."""
    bus = await switchboard.connect(name="consumer-helper")
    deliveries = await bus.queue(queue).consume(prefetch=1)
    delivery = await deliveries.next()
    assert delivery is not None
    print(f"got {delivery.id} {delivery.value}", flush=True)
    await asyncio.sleep(3600)


async def supervised() -> None:
    """A bus-aware supervised service: `cache.get`, pause/continue, reload and custom control 130."""
    bus = await switchboard.connect(name="cache")
    reloads = 0

    def get(key: str) -> str:
        return f"value of {key} (reloads: {reloads})"

    async def traced() -> None:
        # Logged while serving: the event records this request's trace id.
        await service.log(bus, "info", "traced call")

    async def on_control(control: service.Control) -> Any:
        nonlocal reloads
        if control.kind is service.ControlKind.RELOAD:
            reloads += 1
            await control.progress(1, 2.0, "reloading")
            return None
        if control.code == 130:
            return {"flushed": control.value or "all"}
        if control.code == 131:
            raise switchboard.Rejected("131 is refused on purpose")
        return None

    async def ready(_: switchboard.Service) -> None:
        await service.set_status(bus, "serving 1 cache")
        await service.log(bus, "warn", "cache warmed", id="cache.warmed", keys="42")
        print("ready", flush=True)

    controls = service.Controls(pause=True, reload=True, custom=(130, 131), handler=on_control)
    await service.run(bus, "cache", {"get": get, "traced": traced}, controls, ready=ready)


ROLES: Dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "slow-service": slow_service,
    "consumer": consumer,
    "supervised": supervised,
}

if __name__ == "__main__":
    asyncio.run(ROLES[sys.argv[1]](*sys.argv[2:]))
