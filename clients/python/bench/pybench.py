"""Python on both ends: the Switchboard Python client against nats-py (on
nats-server) and dbus-fast (on dbus-daemon), the same workload each.

    pybench.py call SYSTEM ADDRESS --count N [--in-flight K]
    pybench.py pubsub SYSTEM ADDRESS --count N [--size BYTES]

SYSTEM is switchboard, nats or dbus; ADDRESS is where its server listens.
Each case starts its own peer process (a responder, or a subscriber) with
this script, on the same kind of asyncio event loop, and prints one JSON
line: `{"p50_us", "p99_us", "rate", "lost_pct"}`. The Rust bench
(`switchboard-bench all --only python`) runs it and reports the ratios; a
peer library that is not installed prints `{"skipped": why}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

PAYLOAD_SIZE = 16
ECHO_SUBJECT = "pybench.echo"
TOPIC = "pybench.topic"
DBUS_NAME = "org.switchboard.PyBench"
DBUS_PATH = "/org/switchboard/PyBench"

Call = Callable[[bytes], Awaitable[Any]]


def ready() -> None:
    print("ready", flush=True)


# --- peers: a responder and a subscriber for each system ---------------------


async def respond(system: str, address: str) -> None:
    if system == "switchboard":
        import switchboard

        bus = await switchboard.connect(address, name="pybench-responder")

        def echo(data: bytes) -> bytes:
            return data

        await bus.serve("pybench", {"echo": echo})
    elif system == "nats":
        import nats

        nc = await nats.connect(address)

        async def reply(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(ECHO_SUBJECT, cb=reply)
        await nc.flush()
    else:
        from dbus_fast.aio import MessageBus
        from dbus_fast.service import ServiceInterface, method

        class Echo(ServiceInterface):
            def __init__(self) -> None:
                super().__init__(DBUS_NAME)

            @method()
            def Echo(self, data: ay) -> ay:  # type: ignore[name-defined]  # noqa: F821
                return data

        dbus = await MessageBus(bus_address=address).connect()
        dbus.export(DBUS_PATH, Echo())
        await dbus.request_name(DBUS_NAME)
    ready()
    await asyncio.Event().wait()


async def subscribe(system: str, address: str, count: int) -> None:
    """Counts messages until `count` arrived or none came for 2 s; prints the rate."""
    received = 0
    first = last = 0.0
    done = asyncio.Event()

    def got() -> None:
        nonlocal received, first, last
        received += 1
        last = time.perf_counter()
        if received == 1:
            first = last
        if received >= count:
            done.set()

    if system == "switchboard":
        import switchboard

        bus = await switchboard.connect(address, name="pybench-subscriber")
        sub = await bus.subscribe(TOPIC, capacity=65536)

        async def drain() -> None:
            async for item in sub:
                if isinstance(item, switchboard.Message):
                    got()

        task = asyncio.ensure_future(drain())
    else:
        import nats

        nc = await nats.connect(address, pending_size=64 * 1024 * 1024)

        async def on_message(_: Any) -> None:
            got()

        await nc.subscribe(TOPIC, cb=on_message, pending_msgs_limit=65536)
        await nc.flush()
    ready()
    while not done.is_set():
        before = received
        try:
            await asyncio.wait_for(done.wait(), 2.0)
        except asyncio.TimeoutError:
            if received == before and received > 0:
                break
    rate = (received - 1) / (last - first) if received > 1 and last > first else 0.0
    print(json.dumps({"received": received, "rate": rate}), flush=True)
    if system == "switchboard":
        task.cancel()
    os._exit(0)


# --- the measuring side -------------------------------------------------------


def start_peer(*args: str) -> subprocess.Popen[str]:
    peer = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    line = peer.stdout.readline().strip()
    if line != "ready":
        peer.kill()
        raise SystemExit(f"{args[0]} for {args[1]} did not start (said {line!r})")
    return peer


async def caller(system: str, address: str) -> Call:
    if system == "switchboard":
        import switchboard

        bus = await switchboard.connect(address, name="pybench-caller")

        async def call_sb(payload: bytes) -> Any:
            return await bus.call("pybench.echo", {"data": payload}, timeout=10)

        return call_sb
    if system == "nats":
        import nats

        nc = await nats.connect(address)

        async def call_nats(payload: bytes) -> Any:
            return (await nc.request(ECHO_SUBJECT, payload, timeout=10)).data

        return call_nats
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

    dbus = await MessageBus(bus_address=address).connect()

    async def call_dbus(payload: bytes) -> Any:
        message = Message(
            destination=DBUS_NAME, path=DBUS_PATH, interface=DBUS_NAME, member="Echo", signature="ay", body=[payload]
        )
        return (await dbus.call(message)).body[0]

    return call_dbus


def percentile(sorted_ns: List[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, round(p / 100 * (len(sorted_ns) - 1)))] / 1000


async def measure_calls(system: str, address: str, count: int, in_flight: int) -> Dict[str, float]:
    peer = start_peer("respond", system, address)
    try:
        call = await caller(system, address)
        payload = b"x" * PAYLOAD_SIZE
        for _ in range(min(200, count)):
            assert await call(payload) == payload
        if in_flight <= 1:
            samples: List[int] = []
            for _ in range(count):
                started = time.perf_counter_ns()
                await call(payload)
                samples.append(time.perf_counter_ns() - started)
            samples.sort()
            total = sum(samples) / 1e9
            return {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99), "rate": count / total}

        async def worker(calls: int) -> None:
            for _ in range(calls):
                await call(payload)

        started_s = time.perf_counter()
        await asyncio.gather(*(worker(count // in_flight) for _ in range(in_flight)))
        elapsed = time.perf_counter() - started_s
        return {"rate": (count // in_flight) * in_flight / elapsed}
    finally:
        peer.kill()
        peer.wait()


async def measure_pubsub(system: str, address: str, count: int, size: int) -> Dict[str, float]:
    peer = start_peer("subscribe", system, address, str(count))
    try:
        payload = b"x" * size
        if system == "switchboard":
            import switchboard

            bus = await switchboard.connect(address, name="pybench-publisher")
            for _ in range(count):
                await bus.publish(TOPIC, payload, raw=True)
            await bus.flush()
        else:
            import nats

            nc = await nats.connect(address, flush_timeout=30)
            for n in range(count):
                await nc.publish(TOPIC, payload)
                if n % 1000 == 999:
                    await nc.flush()
            await nc.flush()
        assert peer.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, peer.stdout.readline)
        result = json.loads(line)
        return {"rate": float(result["rate"]), "lost_pct": 100.0 * (count - result["received"]) / count}
    finally:
        peer.kill()
        peer.wait()


def available(system: str) -> Optional[str]:
    """Why a system's Python library cannot run here, or None."""
    module = {"switchboard": "switchboard", "nats": "nats", "dbus": "dbus_fast"}[system]
    try:
        __import__(module)
    except ImportError as err:
        return f"{module} is not installed in {sys.prefix} ({err})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["call", "pubsub", "respond", "subscribe"])
    parser.add_argument("system", choices=["switchboard", "nats", "dbus"])
    parser.add_argument("address")
    parser.add_argument("count", nargs="?", type=int, default=0)
    parser.add_argument("--count", dest="total", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--size", type=int, default=PAYLOAD_SIZE)
    args = parser.parse_args()
    if args.mode == "respond":
        asyncio.run(respond(args.system, args.address))
        return
    if args.mode == "subscribe":
        asyncio.run(subscribe(args.system, args.address, args.count))
        return
    why = available(args.system)
    if why is not None:
        print(json.dumps({"skipped": why}), flush=True)
        return
    if args.mode == "call":
        result = asyncio.run(measure_calls(args.system, args.address, args.total, args.in_flight))
    else:
        result = asyncio.run(measure_pubsub(args.system, args.address, args.total, args.size))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
