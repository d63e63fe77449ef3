"""Running as a supervised, bus-aware service: `switchboard.service.run`.

The supervisor starts the process with a secret in
`SWITCHBOARD_INSTANCE_SECRET`. `run` registers the service with one more
method, `__control` (only the daemon may call it), attaches to the supervisor
with the secret and the controls it accepts, and serves until a stop control
(or SIGTERM/SIGINT) arrives. Pause, continue, reload and custom codes
128-255 reach the `Controls.handler`, which may report progress while it
works. The same as the Rust client's `switchboard::service::run`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

import msgpack

from . import trace
from .bus import Bus
from .errors import Rejected
from .serving import Handler, Service

SERVICES = "$sys.services"
CONTROL_METHOD = "__control"
ENV_SECRET = "SWITCHBOARD_INSTANCE_SECRET"
ENV_SERVICE = "SWITCHBOARD_SERVICE"
ENV_INSTANCE = "SWITCHBOARD_INSTANCE"
FIRST_CUSTOM_CODE = 128


class ControlKind(enum.IntEnum):
    """Which control arrived (custom codes are 128-255 and arrive as `CUSTOM`)."""

    STOP = 1
    PAUSE = 2
    CONTINUE = 3
    RELOAD = 4
    CUSTOM = 128


@dataclass
class Control:
    """A control from the supervisor, handed to the control handler."""

    kind: ControlKind
    code: int
    payload: bytes
    bus: Bus = field(repr=False)

    @property
    def value(self) -> Any:
        """The payload decoded from MessagePack (the CLI sends its JSON so); `None` if empty."""
        return msgpack.unpackb(self.payload, raw=False) if self.payload else None

    async def progress(self, checkpoint: int, wait_hint: float, status: str = "") -> None:
        """Tells the supervisor the control is progressing: `checkpoint` must
        grow; `wait_hint` is how many more seconds it may take."""
        await progress(self.bus, checkpoint, wait_hint, status)


ControlHandler = Callable[[Control], Union[Any, Awaitable[Any]]]


@dataclass
class Controls:
    """The controls a service accepts (stop always), and what handles them.

    The handler's return value is the reply to a custom control; raising
    `Rejected` refuses the control (a refused pause leaves the service Running).
    """

    pause: bool = False
    reload: bool = False
    custom: Tuple[int, ...] = ()
    handler: Optional[ControlHandler] = None

    def accepts(self) -> List[int]:
        codes: List[int] = []
        if self.pause:
            codes += [ControlKind.PAUSE, ControlKind.CONTINUE]
        if self.reload:
            codes.append(ControlKind.RELOAD)
        for code in self.custom:
            if not FIRST_CUSTOM_CODE <= code <= 255:
                raise ValueError(f"control code {code} cannot be declared: custom codes are 128-255")
            codes.append(code)
        return codes


async def run(
    bus: Bus,
    service: str,
    methods: Mapping[str, Handler],
    controls: Optional[Controls] = None,
    *,
    ready: Optional[Callable[[Service], Awaitable[None]]] = None,
) -> None:
    """Serves `service` until the supervisor stops it (or SIGTERM/SIGINT), as
    a bus-aware supervised instance. Outside a supervisor (no
    `SWITCHBOARD_INSTANCE_SECRET`) it simply serves until a signal.

    `ready` runs once the service is registered and attached."""
    controls = controls or Controls()
    accepts = controls.accepts()
    stopping = asyncio.Event()

    async def on_control(service: str, code: int, payload: bytes = b"") -> Any:
        kind = _kind_of(code)
        if kind is None:
            raise Rejected(f"unknown control code {code}")
        if kind is not ControlKind.STOP and code not in accepts:
            raise Rejected(f"this service does not accept control {code}")
        result = None
        if controls is not None and controls.handler is not None:
            result = controls.handler(Control(kind, code, bytes(payload), bus))
            if inspect.isawaitable(result):
                result = await result
        if kind is ControlKind.STOP:
            stopping.set()
        return result

    served = await bus.serve(service, {**methods, CONTROL_METHOD: on_control})
    secret = os.environ.get(ENV_SECRET)
    forget: Optional[Callable[[], None]] = None
    if secret:

        async def attach() -> None:
            control = {"secret": secret, "control_instance": served.instance, "accepts": accepts}
            await bus.call(f"{SERVICES}.attach", control)

        await attach()
        # Registered again under a new instance after a reconnect (the daemon
        # re-executed itself, or the connection dropped): attach again.
        forget = bus.on_reconnected(attach)
    if ready is not None:
        await ready(served)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
        # Let the stop control's reply leave before the registration goes.
        await asyncio.sleep(0.02)
    finally:
        if forget is not None:
            forget()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    await served.stop()


def _kind_of(code: int) -> Optional[ControlKind]:
    if code >= FIRST_CUSTOM_CODE:
        return ControlKind.CUSTOM
    try:
        return ControlKind(code)
    except ValueError:
        return None


async def progress(bus: Bus, checkpoint: int, wait_hint: float, status: str = "") -> None:
    """Reports progress of a pending control, or (with any checkpoint) sets the
    status text `switchboard status` shows for this instance."""
    await bus.call(
        f"{SERVICES}.progress",
        {"checkpoint": checkpoint, "wait_hint_ms": int(wait_hint * 1000), "status": status},
    )


async def set_status(bus: Bus, status: str) -> None:
    """Sets the status text `switchboard status` shows for this instance."""
    await progress(bus, 0, 0.0, status)


async def log(bus: Bus, level: str, message: str, *, id: str = "", **fields: str) -> None:
    """Logs a structured event into this instance's service log (`switchboard
    logs SERVICE` shows it as an `event` line): `level` is a syslog severity
    (`warning`, `err`, …; `warn` and `error` work too), `id` the event's own
    identifier if it has one. Only an attached instance may log. Logged while
    serving a request, the event also records the request's trace id."""
    pairs: List[List[str]] = [[key, str(value)] for key, value in fields.items()]
    context = trace.current()
    if context is not None:
        pairs.append(["trace_id", context.trace_id_hex])
    await bus.call(f"{SERVICES}.log", {"level": level, "message": message, "fields": pairs, "id": id})


def notify_ready(status: Optional[str] = None) -> bool:
    """Tells a supervisor (Switchboard's or systemd) this process is ready,
    through `$NOTIFY_SOCKET`. Returns False when not supervised."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    message = "READY=1" + (f"\nSTATUS={status}" if status else "")
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
    return True


def environment() -> Dict[str, Optional[str]]:
    """What the supervisor told this instance: its service name and instance number."""
    return {"service": os.environ.get(ENV_SERVICE), "instance": os.environ.get(ENV_INSTANCE)}
