"""Serving one request: find the method, bind its arguments, run the
handler, answer.

Plain functions run at once on the event loop (they must not block: hand
blocking work to `asyncio.to_thread`); coroutines run as tasks, at most
`max_concurrency` per service at once (more are answered `overloaded`).
A notification (request id 0) is never answered.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import msgpack

from . import _wire as wire
from . import hops
from .errors import CallError, ErrorCode
from .serving import Method, Request, Service, _current, error_of

if TYPE_CHECKING:
    from .bus import Bus

log = logging.getLogger("switchboard")

DIRECT_GRANT_METHOD = "__direct"


def serve_request(bus: Bus, service: Optional[Service], request: wire.Request) -> None:
    req = request.req
    if service is None or service.stopped:
        if req:
            bus._answer_error(req, ErrorCode.NO_SUCH_INSTANCE, f"instance {request.instance} is not served here")
        return
    if request.method == DIRECT_GRANT_METHOD:
        # A caller asked the daemon for a direct channel to us: this client
        # takes none, so the caller keeps calling through the daemon.
        if req:
            bus._refuse_direct(req)
        return
    method = service.methods.get(request.method)
    if method is None:
        if req:
            bus._answer_error(req, ErrorCode.NO_SUCH_METHOD, f"{service.name} has no method {request.method}")
        return
    try:
        kwargs = method.bind(request.payload)
    except CallError as err:
        _fail(bus, req, method, err)
        return
    deadline = time.monotonic() + request.timeout_ms / 1000 if req else None
    context = Request(
        service.name, method.name, request.instance, request.caller, request.headers, request.payload, deadline
    )
    token = _current.set(context)
    hops_token = None
    if req and hops.HOPS_REQUEST in request.headers:
        reporting = hops.Reporting(service.name, method.name, request.instance, request.timeout_ms)
        bus._reporting[req] = reporting
        hops_token = hops.gather_into(reporting.log)
    try:
        if method.is_async:
            _spawn(bus, service, method, req, method.function(**kwargs))
            return
        result = method.function(**kwargs)
        if inspect.isawaitable(result):
            _spawn(bus, service, method, req, result)
        else:
            _finish(bus, req, method, result)
    except Exception as err:
        _fail(bus, req, method, err)
    finally:
        _current.reset(token)
        if hops_token is not None:
            hops.stop_gathering(hops_token)


def _spawn(bus: Bus, service: Service, method: Method, req: int, awaitable: Any) -> None:
    if service.running >= service.max_concurrency:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        if req:
            bus._answer_error(
                req, ErrorCode.OVERLOADED, f"{service.name} serves {service.max_concurrency} requests at once"
            )
        return
    service.running += 1
    task = asyncio.ensure_future(_run(bus, service, method, req, awaitable))
    service.tasks.add(task)
    task.add_done_callback(service.tasks.discard)


async def _run(bus: Bus, service: Service, method: Method, req: int, awaitable: Any) -> None:
    try:
        result = await awaitable
    except asyncio.CancelledError:
        if req:
            bus._answer_error(req, ErrorCode.INSTANCE_GONE, f"{method.name} was cancelled")
        raise
    except Exception as err:
        _fail(bus, req, method, err)
    else:
        _finish(bus, req, method, result)
    finally:
        service.running -= 1


def _finish(bus: Bus, req: int, method: Method, result: Any) -> None:
    if not req:
        return
    try:
        payload = b"" if result is None else msgpack.packb(result, use_bin_type=True)
    except (TypeError, ValueError) as err:
        bus._answer_error(req, ErrorCode.REJECTED, f"cannot encode the reply of {method.name}: {err}")
        return
    bus._answer(req, payload)


def _fail(bus: Bus, req: int, method: Method, err: BaseException) -> None:
    error = error_of(err, method.name)
    if not isinstance(err, CallError):
        log.warning("handler %s raised %s: %s", method.name, type(err).__name__, err)
    if req:
        bus._answer_error(req, int(error.code or ErrorCode.REJECTED), error.message)
