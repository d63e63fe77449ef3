"""The fleet from Python: two real daemons joined through a real NATS server
(docs/fleet.md). A call with `host=` reaches the other host as the caller's
principal there; a broadcast with `fleet=True` answers per instance with its
host. Needs `nats-server` (installed by scripts/install-test-deps.sh)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from conftest import Daemon, eventually, run_async

import switchboard


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Dict[str, Daemon]]:
    server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(server).exists():
        pytest.fail("nats-server is not installed: run scripts/install-test-deps.sh")
    port = _free_port()
    nats = subprocess.Popen(
        [server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemons: Dict[str, Daemon] = {}
    try:
        for host in ("a", "b"):
            directory = tmp_path / host
            directory.mkdir()
            grant = '[[policy]]\nprincipal = "host:a"\nallow = ["call billing.*", "notify billing.*"]\n'
            lists = 'export = ["billing"]\nimport = ["billing"]\n'
            config = f'[fleet]\nname = "{host}"\nnats = "nats://127.0.0.1:{port}"\nqueue_replicas = 1\n{lists}'
            daemons[host] = Daemon(directory, config + (grant if host == "b" else ""))
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()
        nats.kill()
        nats.wait()


@run_async
async def test_a_call_picks_its_host_and_a_fleet_broadcast_names_each_instances_host(fleet: Dict[str, Daemon]) -> None:
    buses = {}
    for host, daemon in fleet.items():
        bus = await switchboard.connect(daemon.address)
        buses[host] = bus

        def who(_label: str = host) -> str:
            return _label

        received: List[int] = []

        def count(_received: List[int] = received) -> None:
            _received.append(1)

        def counted(_received: List[int] = received) -> int:
            return len(_received)

        await bus.serve("billing", {"who": who, "count": count, "counted": counted})
    caller = buses["a"]

    async def b_offers_billing() -> bool:
        try:
            answer = await caller.call("billing.who", host="b", timeout=2.0)
            return bool(answer == "b")
        except switchboard.CallError:
            return False

    await eventually(b_offers_billing, "a reaches billing on b", limit=15.0)
    assert await caller.call("billing.who") == "a", "a local instance is preferred"

    replies = await caller.broadcast("billing.who", timeout=5.0, fleet=True)
    seen = sorted((reply.host or "a", reply.value) for reply in replies)
    assert seen == [("a", "a"), ("b", "b")], replies
    assert all(reply.ok for reply in replies)

    # b's policy knows host:a only: b's own call to a is refused there, by name.
    with pytest.raises(switchboard.PermissionDenied) as refused:
        await buses["b"].call("billing.who", host="a", timeout=5.0)
    assert "@b may not call billing.who" in str(refused.value)
    # A notification to every instance of every host, then each counts one.
    await caller.notify("billing.count", all=True, fleet=True)

    async def each_counted_once() -> bool:
        counted = await caller.broadcast("billing.counted", timeout=5.0, fleet=True)
        return sorted((r.host or "a", r.value) for r in counted) == [("a", 1), ("b", 1)]

    await eventually(each_counted_once, "the notification reached both hosts' instances")
    plain: Optional[List[switchboard.BroadcastReply]] = await caller.broadcast("billing.who", timeout=5.0)
    assert plain is not None and [r.host for r in plain] == [None], "without fleet=True, this host only"
    for bus in buses.values():
        bus.close()


@run_async
async def test_a_queue_declared_for_the_fleet_on_one_host_is_shared_with_the_other(fleet: Dict[str, Daemon]) -> None:
    a = await switchboard.connect(fleet["a"].address)
    b = await switchboard.connect(fleet["b"].address)
    await a.queue("orders").declare(fleet=True, visibility_timeout=5.0)

    async def b_keeps_it_on_the_fleet() -> bool:
        listed = await b.call("$sys.queues.list")
        return any(queue["queue"] == "orders" and queue.get("fleet") for queue in listed)

    await eventually(b_keeps_it_on_the_fleet, "b learns of the fleet queue", limit=10.0)
    await b.queue("orders").put({"order": 7})
    consumer = await a.queue("orders").consume()
    delivery = await consumer.next(timeout=10.0)
    assert delivery is not None, "a got nothing from the fleet queue"
    assert delivery.value == {"order": 7}
    await delivery.ack()
    await consumer.close()
