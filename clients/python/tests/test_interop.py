"""Python and Rust on one bus: the examples' Rust programs (typed
`#[contract]` servers and clients, a retained publisher) against Python
services, callers and subscribers."""

from __future__ import annotations

import asyncio
from typing import Dict, List, Tuple

from conftest import Daemon, Program, eventually, run_async

import switchboard


async def registered(bus: switchboard.Bus, service: str) -> None:
    async def up() -> bool:
        return any(s["service"] == service for s in await bus.services())

    await eventually(up, f"{service} is registered")


@run_async
async def test_python_calls_a_rust_contract_server_with_keyword_arguments(daemon: Daemon) -> None:
    rust = Program(daemon.address, "orders", "inventory")
    bus = await switchboard.connect(daemon.address)
    try:
        await registered(bus, "inventory")
        assert await bus.call("inventory.stock", {"item": "pear"}) == 3
        assert await bus.call("inventory.reserve", {"order": 1, "item": "apple", "qty": 2}) == 8
        try:
            await bus.call("inventory.reserve", {"order": 2, "item": "pear", "qty": 10})
        except switchboard.Rejected as err:
            assert "only 3 pear left" in err.message
        else:
            raise AssertionError("an impossible reservation was accepted")
        try:
            await bus.call("inventory.stock", {"item": 5})
        except switchboard.BadArguments as err:
            assert "`item`" in err.message and "stock" in err.message, err.message
        else:
            raise AssertionError("a mismatched argument was accepted")
        [info] = [s for s in await bus.services() if s["service"] == "inventory"]
        assert "stock(item: String) -> u32" in info["instances"][0]["signatures"]
    finally:
        bus.close()
        rust.stop()


@run_async
async def test_a_rust_contract_client_calls_a_python_service_and_subscribes_to_python(daemon: Daemon) -> None:
    bus = await switchboard.connect(daemon.address)
    stock: Dict[str, int] = {"apple": 10, "pear": 3}
    seen: List[Tuple[int, str, int]] = []

    def reserve(order: int, item: str, qty: int) -> int:
        seen.append((order, item, qty))
        if stock.get(item, 0) < qty:
            raise switchboard.Rejected(f"only {stock.get(item, 0)} {item} left")
        stock[item] -= qty
        return stock[item]

    def level(item: str) -> int:
        return stock.get(item, 0)

    await bus.serve("inventory", {"reserve": reserve, "stock": level})
    fulfilment = Program(daemon.address, "orders", "fulfilment")
    try:

        async def subscribed() -> bool:
            topics = await bus.call("$sys.topics.list")
            return any(s["pattern"] == "orders.created" for s in topics["subscriptions"])

        await eventually(subscribed, "the Rust fulfilment subscribed")
        # A Python publisher's order reaches the Rust subscriber, whose typed
        # client calls the Python service...
        await bus.publish("orders.created", {"id": 7, "item": "pear", "qty": 2})
        # ...and so do the Rust shop's orders.
        shop = Program(daemon.address, "orders", "shop")
        shop.process.wait(30)
        assert "published 4 orders" in shop.stop()

        async def all_reserved() -> bool:
            return len(seen) == 5

        await eventually(all_reserved, "five reservations reached the Python service")
        assert seen[0] == (7, "pear", 2)
        assert sorted(seen[1:]) == [(1, "apple", 2), (2, "pear", 2), (3, "pear", 2), (4, "apple", 1)]
        assert stock == {"apple": 7, "pear": 1}
    finally:
        fulfilment.stop()
        bus.close()


@run_async
async def test_a_python_subscriber_receives_a_rust_publishers_retained_value(daemon: Daemon) -> None:
    monitor = Program(daemon.address, "resources", "monitor")
    bus = await switchboard.connect(daemon.address)
    try:
        await registered(bus, "resources")
        await asyncio.sleep(0.2)
        sub = await bus.subscribe("sys.resources")
        first = await sub.next(timeout=5)
        assert isinstance(first, switchboard.Message)
        assert first.retained and first.topic == "sys.resources"
        assert first.publisher.pid == monitor.process.pid
        assert isinstance(first.value, dict) and first.value, first.value
        current = await bus.call("resources.current")
        assert set(current) == set(first.value)
    finally:
        bus.close()
        monitor.stop()
