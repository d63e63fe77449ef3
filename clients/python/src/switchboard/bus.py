"""`Bus`: the handle an application holds, and the one connection under it.

Any number of calls, subscriptions, consumers and served methods share the
connection, multiplexed by id. The bus owns what each frame from the daemon
means (answers wake their callers, requests go to the method served,
messages to their subscription); when the connection breaks it fails what
was in flight with `ConnectionLost`, reconnects with exponential backoff, and
registers every service, subscription, consumer and watch again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

import msgpack

from . import _wire as wire
from . import fleet as _fleet
from . import hops, names, trace
from ._connection import FrameProtocol, Link, credential_from_env, default_address, default_client_name, open_link
from .breaker import Admission, BreakerPolicy, Breakers
from .calls import BroadcastReply, Gathering
from .dispatch import serve_request
from .errors import CallError, Closed, ConnectionLost, PayloadTooLarge, PermissionDenied, Timeout, from_wire
from .queues import Consumer, Delivery, Queue
from .retry import Budgets, RetryPolicy
from .serving import Handler, Service, inherited_timeout, methods_of
from .topics import DEFAULT_SUBSCRIPTION_CAPACITY, Lagged, Subscription

log = logging.getLogger("switchboard")

DEFAULT_TIMEOUT = 30.0
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
_PREFIX_CACHE = 1024
_U32 = struct.Struct("<I")

Pending = Union["asyncio.Future[Any]", Gathering]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False) if payload else None


async def connect(address: Optional[str] = None, *, name: Optional[str] = None, token: Optional[str] = None) -> Bus:
    """Connects to `address` (`unix:PATH`, a socket path or `tcp://HOST:PORT`),
    else `$SWITCHBOARD_ADDR`, else the default socket.

    The credential is `token` if given, else the instance secret a supervisor
    gave this process (`SWITCHBOARD_INSTANCE_SECRET`), else `$SWITCHBOARD_TOKEN`.
    """
    credential = f"token:{token}" if token else credential_from_env()
    bus = Bus(address or default_address(), name or default_client_name(), credential)
    await bus._connect_first()
    return bus


class Bus:
    """A connection to the switchboard daemon. Use `connect()` to make one."""

    def __init__(self, address: str, client_name: str, credential: str) -> None:
        self.address = address
        self.client_name = client_name
        self._credential = credential
        self._loop = asyncio.get_running_loop()
        self._link: Optional[Link] = None
        self._link_up = asyncio.Event()
        self._closed = False
        self._next_id = 0
        self._pending: Dict[int, Pending] = {}
        self._prefixes: Dict[str, bytes] = {}
        self._topics: Dict[str, bytes] = {}
        self._services: List[Service] = []
        self._instances: Dict[int, Service] = {}
        #: Registrations awaiting `Registered`, by request id.
        self._registering: Dict[int, Service] = {}
        self._subscriptions: Dict[int, Subscription] = {}
        self._consumers: Dict[int, Consumer] = {}
        self._watches: Dict[int, asyncio.Queue[Any]] = {}
        self._reconnected_hooks: List[Callable[[], Awaitable[None]]] = []
        self._retry_budgets = Budgets()
        self._breakers = Breakers()
        #: Breaker reports on their way to the daemon (held so they finish).
        self._reports: Set[asyncio.Task[None]] = set()
        #: Traced calls in flight (where their hop records go), and the hops
        #: this side's handlers report with their answers, by request id.
        self._hop_sinks: Dict[int, List[hops.Hop]] = {}
        self._reporting: Dict[int, hops.Reporting] = {}
        self._reconnecting: Optional[asyncio.Task[None]] = None

    # --- connection -----------------------------------------------------

    async def _connect_first(self) -> None:
        self._attach(await open_link(self.address, self.client_name, self._credential, self._lost))

    def _attach(self, link: Link) -> None:
        link.protocol.on_frame = self._on_frame
        self._link = link
        self._link_up.set()

    def _lost(self, protocol: FrameProtocol) -> None:
        link = self._link
        if link is None or link.protocol is not protocol:
            return
        self._link = None
        self._link_up.clear()
        self._fail_pending(ConnectionLost("the connection to the daemon was lost before the answer came"))
        self._instances.clear()
        # The answers these were waiting to precede cannot be sent now.
        self._reporting.clear()
        if not self._closed and self._reconnecting is None:
            self._reconnecting = self._loop.create_task(self._reconnect())

    def _fail_pending(self, error: CallError) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if isinstance(waiter, Gathering):
                waiter.fail(error)
            elif not waiter.done():
                waiter.set_exception(error)

    async def _reconnect(self) -> None:
        delay = BACKOFF_START
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    link = await open_link(self.address, self.client_name, self._credential, self._lost)
                except Exception as err:
                    log.debug("reconnect to %s failed: %s", self.address, err)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if self._closed:
                    link.close()
                    return
                self._attach(link)
                log.info("reconnected to %s", self.address)
                await self._restore()
                return
        finally:
            self._reconnecting = None

    async def _restore(self) -> None:
        """Registers services, subscriptions, consumers and watches again."""
        for service in list(self._services):
            try:
                await self._register(service)
            except Exception as err:
                log.warning("could not register %s again: %s", service.name, err)
        for sub in list(self._subscriptions.values()):
            self._send_nowait(f"subscription {sub.pattern}", wire.subscribe, sub.sid, sub.pattern.encode())
        for consumer in list(self._consumers.values()):
            if consumer.stopped:  # it was leaving; what it held went with the old connection
                self._consumers.pop(consumer.id)._end(None)
                continue
            self._send_nowait(
                f"consumer of {consumer.queue}",
                wire.queue_consume,
                consumer.id,
                consumer.prefetch,
                consumer.queue.encode(),
            )
        for req, queue in list(self._watches.items()):
            del self._watches[req]
            new = self._id()
            self._watches[new] = queue
            self._write(wire.watch(new))
        for hook in list(self._reconnected_hooks):
            try:
                await hook()
            except Exception as err:
                log.warning("after reconnecting: %s", err)

    def on_reconnected(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Runs `hook` after every reconnect, once services, subscriptions,
        consumers and watches are registered again (a supervised instance
        attaches again this way). Returns what removes it."""
        self._reconnected_hooks.append(hook)

        def remove() -> None:
            if hook in self._reconnected_hooks:
                self._reconnected_hooks.remove(hook)

        return remove

    def close(self) -> None:
        """Closes the connection; what was in flight fails with `Closed`."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subscriptions.values():
            sub._end(None)
        for consumer in self._consumers.values():
            consumer._end(None)
        self._fail_pending(Closed("the bus was closed"))
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._link is not None:
            self._link.close()
            self._link = None

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    @property
    def session(self) -> Optional[int]:
        """The daemon's id of the current connection (`None` while reconnecting)."""
        return self._link.session if self._link is not None else None

    @property
    def connected(self) -> bool:
        return self._link is not None

    def _id(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if self._next_id and self._next_id not in self._pending:
                return self._next_id

    async def _live_link(self, deadline: float) -> Link:
        """The connection, waiting for a reconnect up to `deadline`."""
        while True:
            if self._closed:
                raise Closed("the bus was closed")
            link = self._link
            if link is not None:
                return link
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionLost("no connection to the daemon before the deadline")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._link_up.wait(), left)

    def _write(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.write(data)

    def _send_nowait(self, what: str, make: Callable[..., bytes], *args: Any) -> None:
        """Sends a request nobody waits for (a restore); a refusal is logged."""
        req = self._id()
        future: asyncio.Future[Any] = self._loop.create_future()

        def logged(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.warning("could not restore %s after reconnecting: %s", what, done.exception())

        future.add_done_callback(logged)
        self._pending[req] = future
        self._write(make(req, *args))

    def _check_size(self, link: Link, frame_len: int) -> None:
        if frame_len - 4 > link.max_frame:
            raise PayloadTooLarge(
                f"a frame of {frame_len - 4} bytes does not fit the daemon's maximum of {link.max_frame} bytes"
            )

    async def _request(self, build: Callable[[int], bytes], timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Sends `build(req)` and waits for its `Reply` (the payload) or `Error` (raised)."""
        deadline = time.monotonic() + timeout
        link = self._link or await self._live_link(deadline)
        req = self._id()
        return await self._round_trip(link, req, build(req), deadline, timeout)

    async def _round_trip(self, link: Link, req: int, data: bytes, deadline: float, timeout: float) -> bytes:
        self._check_size(link, len(data))
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[req] = future
        link.write(data)
        timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._expire, req, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, req: int, timeout: float) -> None:
        waiter = self._pending.pop(req, None)
        if isinstance(waiter, Gathering):
            waiter.expire()
        elif waiter is not None and not waiter.done():
            waiter.set_exception(Timeout(f"no reply within {timeout:g} s"))

    # --- frames from the daemon ----------------------------------------

    def _on_frame(self, kind: int, body: bytes) -> None:
        if kind == wire.REPLY:
            waiter = self._pending.pop(_U32.unpack_from(body)[0], None)
            if waiter is not None and not isinstance(waiter, Gathering) and not waiter.done():
                waiter.set_result(body[4:])
        elif kind == wire.REQUEST:
            request = wire.request(body)
            service = self._instances.get(request.instance)
            serve_request(self, service, request)
        elif kind == wire.MESSAGE:
            sid, message = wire.message(body)
            sub = self._subscriptions.get(sid)
            if sub is not None:
                sub._push(message)
        else:
            self._on_control_frame(kind, body)

    def _on_control_frame(self, kind: int, body: bytes) -> None:
        if kind == wire.ERROR:
            req, code, message = wire.error_body(body)
            waiter = self._pending.pop(req, None)
            if isinstance(waiter, Gathering):
                waiter.fail(from_wire(code, message))
            elif waiter is not None and not waiter.done():
                waiter.set_exception(from_wire(code, message))
        elif kind == wire.REGISTERED:
            req, instance = struct.unpack("<IQ", body)
            waiter = self._pending.pop(req, None)
            service = self._registering.pop(req, None)
            if service is not None:
                # Mapped before the registrant wakes: a request for the new
                # instance may be the very next frame in this read.
                service.instance = instance
                self._instances[instance] = service
            if waiter is not None and not isinstance(waiter, Gathering) and not waiter.done():
                waiter.set_result(instance)
        elif kind in (wire.BROADCAST_START, wire.BROADCAST_RESULT):
            self._on_broadcast(kind, body)
        elif kind == wire.LAGGED:
            sid, missed = struct.unpack("<IQ", body)
            sub = self._subscriptions.get(sid)
            if sub is not None:
                sub._push(Lagged(missed))
        elif kind == wire.QUEUE_DELIVERY:
            d = wire.delivery(body)
            consumer = self._consumers.get(d.consumer)
            if consumer is not None:
                consumer._push(Delivery(d.id, d.attempt, d.priority, d.headers, d.payload, d.tag, self))
        elif kind == wire.EVENT:
            req = _U32.unpack_from(body)[0]
            queue = self._watches.get(req)
            if queue is not None and queue.qsize() < queue.maxsize:
                queue.put_nowait(_unpack(body[4:]))
        elif kind == wire.ENDED:
            self._on_ended(body)
        elif kind == wire.HOPS:
            req, pairs = wire.hops_body(body)
            sink = self._hop_sinks.get(req)
            if sink is not None:
                sink.extend(hops.records(pairs))
        elif kind == wire.GOODBYE:
            code, message = wire.goodbye(body)
            log.warning("the daemon closed the connection (%s): %s", from_wire(code, "").kind, message)

    def _on_broadcast(self, kind: int, body: bytes) -> None:
        req = _U32.unpack_from(body)[0]
        gathering = self._pending.get(req)
        if not isinstance(gathering, Gathering):
            return
        if kind == wire.BROADCAST_START:
            (count,) = struct.unpack_from("<H", body, 4)
            done = gathering.start(list(struct.unpack_from(f"<{count}Q", body, 6)))
        else:
            instance, code = struct.unpack_from("<QH", body, 4)
            payload = body[14:]
            done = gathering.result(instance, code, payload)
        if done:
            self._pending.pop(req, None)

    def _on_ended(self, body: bytes) -> None:
        cursor = wire.Cursor(body)
        what, ended_id, code, message = cursor.u8(), cursor.u64(), cursor.u16(), cursor.text()
        why = from_wire(code, message)
        if what == 1 and ended_id in self._subscriptions:
            self._subscriptions.pop(ended_id)._end(why)
        elif what == 2 and ended_id in self._consumers:
            self._consumers.pop(ended_id)._end(why)
        elif what == 3:
            service = self._instances.pop(ended_id, None)
            if service is not None and service in self._services:
                self._services.remove(service)
        elif what == 4:
            self._watches.pop(ended_id, None)
        what_name = ("something", "a subscription", "a consumer", "a service", "a watch")[what % 5]
        log.warning("the daemon ended %s: %s", what_name, why)

    # --- calls ----------------------------------------------------------

    def _prefix(self, target: str) -> bytes:
        prefix = self._prefixes.get(target)
        if prefix is None:
            if len(self._prefixes) >= _PREFIX_CACHE:
                self._prefixes.clear()
            prefix = wire.call_prefix(*names.target(target))
            self._prefixes[target] = prefix
        return prefix

    async def call(
        self,
        target: str,
        args: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        instance: int = 0,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
        retry: Optional[RetryPolicy] = None,
        host: Optional[str] = None,
    ) -> Any:
        """Calls `SERVICE.METHOD` with `args` (MessagePack-encoded; `raw=True`
        sends bytes as they are and returns the reply's bytes) and returns the
        decoded reply. Raises the `CallError` subclass of what went wrong.
        With `retry`, failures that allow it are tried again within `timeout`
        (see `switchboard.RetryPolicy`); the error raised then says how many
        attempts were made (`err.attempts`). With `host`, the call goes to
        that host of the fleet the daemon joined (docs/fleet.md)."""
        if host is not None:
            headers = {**(headers or {}), _fleet.HOST_HEADER: host}
        if retry is not None:
            value, _ = await self.call_attempts(
                target, args, timeout=timeout, instance=instance, headers=headers, raw=raw, retry=retry
            )
            return value
        return await self._call_once(target, args, timeout, instance, headers, raw)

    async def call_attempts(
        self,
        target: str,
        args: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        instance: int = 0,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
        retry: Optional[RetryPolicy] = None,
    ) -> Tuple[Any, int]:
        """`call` that also returns how many attempts it took. Every attempt
        carries the same trace context; all fit in `timeout`."""
        policy = retry or RetryPolicy(max_attempts=1)
        timeout = inherited_timeout(timeout)
        deadline = time.monotonic() + timeout
        headers = trace.outgoing(headers)
        service = target.rsplit(".", 1)[0]
        self._retry_budgets.deposit(service)
        attempts = 1
        while True:
            try:
                left = max(deadline - time.monotonic(), 0.001)
                return await self._call_once(target, args, left, instance, headers, raw), attempts
            except CallError as err:
                err.attempts = attempts
                wait = policy.backoff(attempts)
                in_time = time.monotonic() + wait < deadline
                if not (policy.allows(err, attempts) and in_time and self._retry_budgets.withdraw(service)):
                    raise
                log.debug("retrying %s after %s (attempt %d)", target, err.kind, attempts)
            await asyncio.sleep(wait)
            attempts += 1

    def set_breakers(self, policy: Optional[BreakerPolicy]) -> None:
        """Circuit breakers for the services this bus calls: with a policy, a
        service that keeps failing gets `CircuitOpen` at once until a probe
        call succeeds (see `switchboard.breaker`); `None` (the default) turns
        them off. Setting it starts every breaker closed."""
        self._breakers.set_policy(policy)

    def set_breaker_for(self, service: str, policy: Optional[BreakerPolicy]) -> None:
        """`service`'s own breaker setting, whatever `set_breakers` says for
        the rest: a policy of its own, or `None` for no breaker at all."""
        self._breakers.set_policy_for(names.service(service).decode(), policy)

    def open_breakers(self) -> List[Tuple[str, str]]:
        """(service, `open` or `half-open`) for each breaker not closed now."""
        return self._breakers.not_closed()

    async def _call_once(
        self,
        target: str,
        args: Any,
        timeout: float,
        instance: int,
        headers: Optional[Mapping[str, str]],
        raw: bool,
    ) -> Any:
        """One attempt, through the target service's circuit breaker (if on)."""
        breakers = self._breakers
        service = target.rsplit(".", 1)[0]
        admission = breakers.admit(service, time.monotonic()) if breakers.enabled else None
        if admission is None:
            return await self._call_unguarded(target, args, timeout, instance, headers, raw)
        try:
            value = await self._call_unguarded(target, args, timeout, instance, headers, raw)
        except CallError as err:
            self._breaker_outcome(service, admission, err)
            raise
        except BaseException:
            # Abandoned (cancelled): a probe counts as failed, so the breaker
            # opens again instead of staying half-open with no probe out.
            if admission is Admission.PROBE:
                self._breaker_outcome(service, admission, Timeout("the probe call was abandoned"))
            raise
        self._breaker_outcome(service, admission, None)
        return value

    def _breaker_outcome(self, service: str, admission: Admission, error: Optional[CallError]) -> None:
        if self._breakers.record(service, admission, error, time.monotonic()):
            # Sent from a task of its own: the state is read when it leaves.
            report = self._loop.create_task(self._report_breakers())
            self._reports.add(report)
            report.add_done_callback(self._reports.discard)

    async def _report_breakers(self) -> None:
        """Tells the daemon which breakers are open now (`switchboard ls --breakers`)."""
        try:
            await self.call("$sys.daemon.report_breakers", self._breakers.report())
        except CallError as err:
            log.debug("could not report circuit breakers to the daemon: %s", err)

    async def _call_unguarded(
        self,
        target: str,
        args: Any,
        timeout: float,
        instance: int,
        headers: Optional[Mapping[str, str]],
        raw: bool,
    ) -> Any:
        prefix = self._prefix(target)
        with_hops, sink = hops.outgoing(trace.outgoing(headers))
        head = names.header_block(with_hops)
        payload = args if raw else _pack(args)
        timeout = inherited_timeout(timeout)
        deadline = time.monotonic() + timeout
        link = self._link or await self._live_link(deadline)
        async with link.inflight:
            req = self._id()
            data = wire.call(req, wire.millis(timeout, 1), instance, prefix, head, payload)
            if sink is None:
                reply = await self._round_trip(link, req, data, deadline, timeout)
            else:
                self._hop_sinks[req] = sink
                try:
                    reply = await self._round_trip(link, req, data, deadline, timeout)
                finally:
                    del self._hop_sinks[req]
        return reply if raw else _unpack(reply)

    async def call_traced(
        self,
        target: str,
        args: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        instance: int = 0,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
        retry: Optional[RetryPolicy] = None,
    ) -> hops.Traced:
        """`call` that also gathers what every handler along it saw (the
        deadline left when the request reached it, how long it took, how it
        answered), nearest first; an error is returned, not raised."""
        log: List[hops.Hop] = []
        token = hops.gather_into(log)
        try:
            value = await self.call(
                target, args, timeout=timeout, instance=instance, headers=headers, raw=raw, retry=retry
            )
        except CallError as err:
            return hops.Traced(error=err, hops=log)
        finally:
            hops.stop_gathering(token)
        return hops.Traced(value=value, hops=log)

    async def notify(
        self,
        target: str,
        args: Any = None,
        *,
        instance: int = 0,
        all: bool = False,
        headers: Optional[Mapping[str, str]] = None,
        fleet: bool = False,
    ) -> None:
        """Sends a one-way notification (to every instance with `all=True`;
        with `fleet=True` too, to every instance on every host of the fleet)."""
        if fleet:
            if not all:
                raise ValueError("fleet=True notifies every instance: give all=True too")
            headers = {**(headers or {}), _fleet.FLEET_HEADER: "1"}
        prefix = self._prefix(target)
        head = names.header_block(trace.outgoing(headers))
        link = await self._live_link(time.monotonic() + DEFAULT_TIMEOUT)
        data = wire.notify(all, instance, prefix, head, _pack(args))
        self._check_size(link, len(data))
        link.write(data)
        await link.drain()

    async def broadcast(
        self,
        target: str,
        args: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        fleet: bool = False,
    ) -> List[BroadcastReply]:
        """Calls the method on every instance; one `BroadcastReply` per instance,
        once all answered, failed or the deadline passed. With `fleet=True`,
        every instance on every host of the fleet the daemon joined, each
        reply naming its `host` (`None` for this one); a host that did not
        answer is one entry with `missing_instances` and its error."""
        if fleet:
            headers = {**(headers or {}), _fleet.FLEET_HEADER: "1"}
            return _fleet.unpack(await self.broadcast(target, args, timeout=timeout, headers=headers))
        prefix = self._prefix(target)
        head = names.header_block(trace.outgoing(headers))
        timeout = inherited_timeout(timeout)
        deadline = time.monotonic() + timeout
        link = await self._live_link(deadline)
        req = self._id()
        data = wire.broadcast(req, wire.millis(timeout, 1), prefix, head, _pack(args))
        self._check_size(link, len(data))
        gathering = Gathering(self._loop, timeout)
        self._pending[req] = gathering
        link.write(data)
        timer = self._loop.call_later(timeout, self._expire, req, timeout)
        try:
            return await gathering.done
        finally:
            timer.cancel()

    # --- topics ---------------------------------------------------------

    async def publish(
        self,
        topic: str,
        value: Any = None,
        *,
        retain: bool = False,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
    ) -> None:
        """Publishes `value` (MessagePack; bytes as they are with `raw=True`).
        Returns once queued; `flush()` waits until the daemon has it."""
        field = self._topics.get(topic)
        if field is None:
            if len(self._topics) >= _PREFIX_CACHE:
                self._topics.clear()
            field = self._topics[topic] = wire.name(names.topic(topic))
        head = names.header_block(trace.outgoing(headers))
        data = wire.publish(retain, field, head, value if raw else _pack(value))
        link = self._link or await self._live_link(time.monotonic() + DEFAULT_TIMEOUT)
        self._check_size(link, len(data))
        link.write(data)
        if link.protocol.writable is not None:
            await link.drain()

    async def subscribe(self, pattern: str, *, capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY) -> Subscription:
        """Subscribes to `pattern` (`*` one token, `>` the rest); retained values come first."""
        return await Subscription.open(self, pattern, capacity)

    # --- serving --------------------------------------------------------

    async def serve(self, service: str, methods: Mapping[str, Handler], *, max_concurrency: int = 1024) -> Service:
        """Registers `service` with `methods` (name → async or plain function)."""
        names.service(service)
        served = Service(self, service, methods_of(methods), max_concurrency)
        await self._register(served)
        self._services.append(served)
        return served

    async def _register(self, service: Service) -> None:
        spec = service.register_spec()
        held: List[int] = []

        def register(req: int) -> bytes:
            held.append(req)
            self._registering[req] = service
            return wire.register(req, service.name.encode(), spec)

        try:
            await self._request(register)
        finally:
            for req in held:
                self._registering.pop(req, None)

    async def _unregister(self, service: Service) -> None:
        if service in self._services:
            self._services.remove(service)
        instance = service.instance
        if self._instances.pop(instance, None) is not None and self._link is not None:
            await self._request(lambda req: wire.unregister(req, instance))

    def _answer(self, req: int, payload: bytes) -> None:
        link = self._link
        if link is None:
            return
        if len(payload) + 9 > link.max_frame:
            self._answer_error(req, int(PayloadTooLarge.code or 5), f"the reply of {len(payload)} bytes is too large")
            return
        self._report_hops(req, "ok")
        link.write(wire.reply(req, payload))

    def _answer_error(self, req: int, code: int, message: str) -> None:
        self._report_hops(req, from_wire(code, "").kind)
        self._write(wire.error(req, code, message))

    def _report_hops(self, req: int, outcome: str) -> None:
        reporting = self._reporting.pop(req, None) if self._reporting else None
        if reporting is not None:
            self._write(reporting.frame(req, outcome))

    # --- queues ---------------------------------------------------------

    def queue(self, name: str) -> Queue:
        """A handle on the durable queue `name` (nothing is sent yet)."""
        return Queue(self, name)

    # --- discovery --------------------------------------------------------

    async def whoami(self) -> Dict[str, Any]:
        """Who the daemon says this connection is: `{principal, session, uid, pid}`."""
        result: Dict[str, Any] = await self.call("$sys.daemon.whoami")
        return result

    async def services(self) -> List[Dict[str, Any]]:
        """Every registered service with its instances and method signatures."""
        result: List[Dict[str, Any]] = await self.call("$sys.registry.list")
        return result

    async def flush(self) -> None:
        """Waits until the daemon has everything sent so far (one round trip)."""
        await self.whoami()

    async def watch(self, capacity: int = 1024) -> asyncio.Queue[Dict[str, Any]]:
        """A queue of registry changes (`{event: "up"|"down", service, instance, ...}`) from now on."""
        queue: asyncio.Queue[Dict[str, Any]] = asyncio.Queue(maxsize=max(1, capacity))
        holder: List[int] = []

        def build(req: int) -> bytes:
            holder.append(req)
            self._watches[req] = queue
            return wire.watch(req)

        try:
            await self._request(build)
        except BaseException:
            for req in holder:
                self._watches.pop(req, None)
            raise
        return queue

    def _refuse_direct(self, req: int) -> None:
        self._answer_error(req, int(PermissionDenied.code or 8), "this client takes no direct channels")
