"""Reconnecting after a daemon restart, and a supervised Python service
controlled from the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

from conftest import HERE, Daemon, eventually, run_async

import switchboard


@run_async
async def test_after_a_daemon_restart_services_subscriptions_and_consumers_come_back(daemon: Daemon) -> None:
    server = await switchboard.connect(daemon.address)
    await server.serve("math", {"double": lambda x: 2 * x})
    sub = await server.subscribe("news.>")
    consumer = await server.queue("jobs").consume()
    client = await switchboard.connect(daemon.address)
    assert await client.call("math.double", {"x": 1}) == 2

    daemon.stop()
    try:
        await client.call("math.double", {"x": 1}, timeout=0.3)
    except (switchboard.ConnectionLost, switchboard.Timeout):
        pass
    else:
        raise AssertionError("a call succeeded with no daemon")
    daemon.start()

    async def served_again() -> bool:
        try:
            return bool(await client.call("math.double", {"x": 2}, timeout=1) == 4)
        except (switchboard.NoSuchService, switchboard.ConnectionLost, switchboard.Timeout):
            return False

    await eventually(served_again, "the service is registered again after the restart")

    async def subscribed_again() -> bool:
        await client.publish("news.eu", "after the restart")
        item = await sub.next(timeout=0.1)
        return isinstance(item, switchboard.Message) and item.value == "after the restart"

    await eventually(subscribed_again, "the subscription is restored")
    await client.queue("jobs").put("job after restart")
    delivery = await consumer.next(timeout=5)
    assert delivery is not None and delivery.value == "job after restart"
    await delivery.ack()
    server.close()
    client.close()


# A daemon running as root refuses to run a service as root unless told.
AS_ROOT = "run_as_root = true" if os.geteuid() == 0 else ""


def supervised_config(directory: Path) -> str:
    return f"""
[services.cache]
command = "{sys.executable}"
args = ["{HERE / "helpers.py"}", "supervised"]
ready = "bus"
environment = {{ PYTHONPATH = "{":".join(sys.path)}" }}
{AS_ROOT}
"""


async def status(daemon: Daemon) -> Dict[str, Any]:
    return await status_of(daemon, "cache")


async def status_of(daemon: Daemon, service: str) -> Dict[str, Any]:
    out = await asyncio.to_thread(daemon.cli, "status", service, "--json")
    parsed: Any = json.loads(out.stdout)
    return dict(parsed[0] if isinstance(parsed, list) else parsed)


@run_async
async def test_a_supervised_python_service_is_paused_continued_and_controlled_from_the_cli(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(supervised_config(tmp_path))

    async def running_with_status() -> bool:
        state = await status(daemon)
        instances: List[Dict[str, Any]] = state["instances"]
        return bool(state["state"] == "Running" and instances[0]["status"] == "serving 1 cache")

    await eventually(running_with_status, "cache is Running with its status text", limit=20)
    state = await status(daemon)
    assert state["instances"][0]["bus_aware"] is True
    bus = await switchboard.connect(daemon.address)
    assert await bus.call("cache.get", {"key": "k"}) == "value of k (reloads: 0)"

    await asyncio.to_thread(daemon.cli, "pause", "cache")
    assert (await status(daemon))["state"] == "Paused"
    try:
        await bus.call("cache.get", {"key": "k"})
    except switchboard.ServicePaused:
        pass
    else:
        raise AssertionError("a paused service answered")
    try:
        await bus.call("$sys.services.pause", {"service": "cache"})
    except switchboard.InvalidTransition as err:
        assert "Paused" in err.message
    else:
        raise AssertionError("pausing a paused service was accepted")
    await asyncio.to_thread(daemon.cli, "continue", "cache")
    assert await bus.call("cache.get", {"key": "k"}) == "value of k (reloads: 0)"

    await asyncio.to_thread(daemon.cli, "control", "cache", "reload")
    assert await bus.call("cache.get", {"key": "k"}) == "value of k (reloads: 1)"
    out = await asyncio.to_thread(daemon.cli, "control", "cache", "130", '"keys"', "--json")
    assert "flushed" in out.stdout, out.stdout
    refused = await asyncio.to_thread(daemon.cli, "control", "cache", "131", check=False)
    assert refused.returncode != 0 and "131 is refused on purpose" in refused.stdout + refused.stderr
    logs = await asyncio.to_thread(daemon.cli, "logs", "cache", "--level", "warning", "--json")
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    [event] = [e for e in events if e["stream"] == "event"]
    assert (event["line"], event["level"], event["id"]) == ("cache warmed keys=42", "warning", "cache.warmed")
    # An event logged while serving a call records the call's trace id.
    own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await bus.call("cache.traced", headers={"traceparent": own})
    logs = await asyncio.to_thread(daemon.cli, "logs", "cache", "--json")
    lines = [json.loads(line)["line"] for line in logs.stdout.splitlines()]
    assert "traced call trace_id=4bf92f3577b34da6a3ce929d0e0e4736" in lines, lines

    await asyncio.to_thread(daemon.cli, "stop", "cache")
    assert (await status(daemon))["state"] == "Stopped"
    bus.close()


@run_async
async def test_after_a_daemon_reexec_the_same_process_attaches_again_and_is_controlled(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(supervised_config(tmp_path))

    async def attached() -> bool:
        state = await status(daemon)
        return bool(state["state"] == "Running" and state["instances"][0]["bus_aware"])

    await eventually(attached, "cache is Running and attached", limit=20)
    pid = (await status(daemon))["instances"][0]["pid"]
    out = await asyncio.to_thread(daemon.cli, "reexec", "--json")
    assert json.loads(out.stdout)["generation"] == 1
    await eventually(attached, "cache attached again after the reexec")
    assert (await status(daemon))["instances"][0]["pid"] == pid
    bus = await switchboard.connect(daemon.address)
    assert await bus.call("cache.get", {"key": "k"}) == "value of k (reloads: 0)"
    # Controls reach the same process over its new registration.
    await asyncio.to_thread(daemon.cli, "control", "cache", "reload")
    assert await bus.call("cache.get", {"key": "k"}) == "value of k (reloads: 1)"
    bus.close()


@run_async
async def test_a_service_whose_restarts_are_spent_is_service_failed(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(
        '[services.broken]\ncommand = "false"\nrestart = "on-failure"\n'
        'backoff = { initial = "10ms", max = "10ms" }\nbudget = { restarts = 1, window = "60s" }\n'
        f"{AS_ROOT}\n"
    )
    bus = await switchboard.connect(daemon.address)

    async def failed() -> bool:
        out = await asyncio.to_thread(daemon.cli, "status", "broken", "--json")
        return '"Failed"' in out.stdout

    await eventually(failed, "broken is Failed", limit=20)
    logs = await asyncio.to_thread(daemon.cli, "logs", "broken")
    assert "exited" in logs.stdout and "refusing" not in logs.stdout, logs.stdout
    try:
        await bus.call("broken.anything", timeout=2)
    except switchboard.ServiceFailed:
        pass
    else:
        raise AssertionError("a failed service was called")
    bus.close()


@run_async
async def test_notify_ready_makes_a_notify_service_running(make_daemon: Callable[..., Daemon]) -> None:
    script = "import time; from switchboard.service import notify_ready; assert notify_ready('up'); time.sleep(60)"
    daemon = make_daemon(
        f'[services.plain]\ncommand = "{sys.executable}"\nargs = ["-c", "{script}"]\nready = "notify"\n'
        f'start_timeout = "20s"\nenvironment = {{ PYTHONPATH = "{":".join(sys.path)}" }}\n{AS_ROOT}\n'
    )

    async def running() -> bool:
        state = await status_of(daemon, "plain")
        return bool(state["state"] == "Running" and state["instances"][0]["status"] == "up")

    await eventually(running, "plain is Running after READY=1 with its STATUS", limit=20)
