"""One connection to the daemon: where it goes, the handshake, and the byte
stream cut into frames.

`open_link` connects (Unix socket or TCP), refuses to send a credential to a
socket served by another user, performs the handshake and returns a `Link`
whose protocol hands every later frame to a callback. The `Bus` owns what the
frames mean; this module never interprets a frame after `Welcome`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
from typing import Callable, Optional, Tuple

from . import _wire as wire
from .errors import HandshakeFailed, Refused, Unreachable, UntrustedDaemon

HANDSHAKE_TIMEOUT = 5.0
ENV_ADDR = "SWITCHBOARD_ADDR"
ENV_SECRET = "SWITCHBOARD_INSTANCE_SECRET"
ENV_TOKEN = "SWITCHBOARD_TOKEN"
ENV_DAEMON_UID = "SWITCHBOARD_DAEMON_UID"

FrameHandler = Callable[[int, bytes], None]


def default_socket_path() -> str:
    """`$XDG_RUNTIME_DIR/switchboard/bus.sock`, else `/tmp/switchboard-<uid>/bus.sock`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "switchboard", "bus.sock")
    return f"/tmp/switchboard-{os.getuid()}/bus.sock"


def default_address() -> str:
    """`$SWITCHBOARD_ADDR` if set, else the default socket."""
    return os.environ.get(ENV_ADDR) or f"unix:{default_socket_path()}"


def parse_address(address: str) -> Tuple[str, str, int]:
    """`unix:PATH`, a socket path, or `tcp://HOST:PORT` → (kind, path or host, port)."""
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"invalid address {address!r}: expected tcp://HOST:PORT")
        return "tcp", host.strip("[]"), int(port)
    if address.startswith("unix:"):
        address = address[len("unix:") :]
    if not address.startswith("/"):
        raise ValueError(f"invalid address {address!r}: expected unix:PATH, /PATH or tcp://HOST:PORT")
    return "unix", address, 0


def credential_from_env() -> str:
    """The instance secret a supervisor gave this process, else `SWITCHBOARD_TOKEN`."""
    secret = os.environ.get(ENV_SECRET)
    if secret:
        return f"secret:{secret}"
    token = os.environ.get(ENV_TOKEN)
    return f"token:{token}" if token else ""


def default_client_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _trusted_daemon_uid(uid: int) -> bool:
    named = os.environ.get(ENV_DAEMON_UID, "").strip()
    return uid in (os.getuid(), 0) or (named.isdigit() and int(named) == uid)


class FrameProtocol(asyncio.Protocol):
    """Cuts the byte stream into frames; every frame goes to `on_frame`."""

    def __init__(self, on_lost: Callable[[FrameProtocol], None]) -> None:
        self.on_frame: FrameHandler = self._handshake_frame
        self.on_lost = on_lost
        self.max_frame = wire.HANDSHAKE_MAX_FRAME
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.first: asyncio.Future[Tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.writable: Optional[asyncio.Future[None]] = None

    def _handshake_frame(self, kind: int, body: bytes) -> None:
        if not self.first.done():
            self.first.set_result((kind, body))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at, size = 0, len(buffer)
        unpack = struct.unpack_from
        while size - at >= 5:
            (length,) = unpack("<I", buffer, at)
            if length < 1 or length > self.max_frame:
                self.buffer = bytearray()
                if self.transport is not None:
                    self.transport.abort()
                return
            end = at + 4 + length
            if end > size:
                break
            kind = buffer[at + 4]
            body = bytes(buffer[at + 5 : end])
            at = end
            self.on_frame(kind, body)
        if at:
            del buffer[:at]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.first.done():
            self.first.set_exception(HandshakeFailed("the daemon closed the connection"))
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.on_lost(self)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)


class Link:
    """A connection that completed its handshake."""

    def __init__(self, protocol: FrameProtocol, welcome: wire.Welcome) -> None:
        assert protocol.transport is not None
        self.protocol = protocol
        self.transport = protocol.transport
        self.write = protocol.transport.write
        self.session = welcome.session
        self.max_frame = welcome.max_frame
        self.inflight = asyncio.Semaphore(max(1, welcome.max_inflight))
        self.closed = False

    async def drain(self) -> None:
        """Waits while the socket's send buffer is over its high-water mark."""
        writable = self.protocol.writable
        if writable is not None and not writable.done():
            await writable

    def close(self) -> None:
        self.closed = True
        self.transport.close()


async def open_link(address: str, client_name: str, credential: str, on_lost: Callable[[FrameProtocol], None]) -> Link:
    """Connects to `address` and performs the handshake."""
    kind, where, port = parse_address(address)
    loop = asyncio.get_running_loop()
    protocol = FrameProtocol(on_lost)
    try:
        if kind == "unix":
            await loop.create_unix_connection(lambda: protocol, where)
        else:
            await loop.create_connection(lambda: protocol, where, port)
    except OSError as err:
        raise Unreachable(
            f"no switchboard daemon at {address}: {err.strerror or err} (is `switchboard up` running?)"
        ) from err
    assert protocol.transport is not None
    transport = protocol.transport
    sock = transport.get_extra_info("socket")
    if kind == "unix":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    else:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if credential and kind == "unix":
        uid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if not _trusted_daemon_uid(uid):
            transport.abort()
            raise UntrustedDaemon(
                f"not sending credentials to {address}: it is served by uid {uid}, not by you, root "
                f"or {ENV_DAEMON_UID} (set that to the daemon's uid if it really runs as another user)"
            )
    transport.write(wire.hello(client_name, credential))
    try:
        frame_kind, body = await asyncio.wait_for(asyncio.shield(protocol.first), HANDSHAKE_TIMEOUT)
    except asyncio.TimeoutError:
        transport.abort()
        raise HandshakeFailed(f"handshake with {address} failed: no answer within 5 s") from None
    if frame_kind == wire.GOODBYE:
        transport.abort()
        raise Refused(*wire.goodbye(body))
    if frame_kind != wire.WELCOME:
        transport.abort()
        raise HandshakeFailed(f"handshake with {address} failed: expected Welcome, got frame {frame_kind}")
    welcome = wire.welcome(body)
    protocol.max_frame = welcome.max_frame
    return Link(protocol, welcome)
