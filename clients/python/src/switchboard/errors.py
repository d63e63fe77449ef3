"""Every error the bus can answer, as an exception class a caller can catch.

The daemon's error table (docs/protocol.md, "Error codes") is declared once
here, in `ErrorCode`; each code has one exception class, named as the Rust
client's `CallError` variant. Errors that happen on this side (the connection
was lost, the bus closed, a reply could not be decoded) have their own classes
with no code. This module never does I/O.
"""

from __future__ import annotations

import enum
from typing import Dict, Optional, Type


class ErrorCode(enum.IntEnum):
    """The daemon's error codes, as on the wire (`u16`)."""

    NO_SUCH_SERVICE = 1
    NO_SUCH_METHOD = 2
    TIMEOUT = 3
    INSTANCE_GONE = 4
    PAYLOAD_TOO_LARGE = 5
    REJECTED = 6
    SHUTTING_DOWN = 7
    PERMISSION_DENIED = 8
    BAD_REQUEST = 9
    OVERLOADED = 10
    NO_SUCH_INSTANCE = 11
    UNSUPPORTED_VERSION = 12
    PROTOCOL_VIOLATION = 13
    BAD_ARGUMENTS = 14
    QUEUE_FULL = 15
    NO_SUCH_QUEUE = 16
    STALE_DELIVERY = 17
    STORAGE_FAILED = 18
    SERVICE_PAUSED = 19
    SERVICE_FAILED = 20
    INVALID_TRANSITION = 21
    NO_SUCH_REGION = 22

    @property
    def kind(self) -> str:
        """The stable short name (`"no_such_service"`), as the CLI prints it."""
        return self.name.lower()


class SwitchboardError(Exception):
    """The base of every error this package raises."""


class CallError(SwitchboardError):
    """A request failed; `kind` names why (`"timeout"`, `"rejected"`, ...).

    Errors answered by the daemon or the callee carry their `code`; an
    unknown code (from a newer daemon) is kept as a plain `CallError`.
    """

    code: Optional[int] = None
    #: Attempts made before this error, for a call made with a retry policy.
    attempts: int = 1

    def __init__(self, message: str = "", *, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def kind(self) -> str:
        if self.code is None:
            return _LOCAL_KINDS.get(type(self), "error")
        try:
            return ErrorCode(self.code).kind
        except ValueError:
            return f"error_{self.code}"

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


class NoSuchService(CallError):
    code = ErrorCode.NO_SUCH_SERVICE


class NoSuchMethod(CallError):
    code = ErrorCode.NO_SUCH_METHOD


class Timeout(CallError, TimeoutError):
    """No answer within the deadline (also a builtin `TimeoutError`)."""

    code = ErrorCode.TIMEOUT


class InstanceGone(CallError):
    code = ErrorCode.INSTANCE_GONE


class PayloadTooLarge(CallError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class Rejected(CallError):
    """The callee refused; raise it from a handler to refuse a request."""

    code = ErrorCode.REJECTED


class ShuttingDown(CallError):
    code = ErrorCode.SHUTTING_DOWN


class PermissionDenied(CallError):
    code = ErrorCode.PERMISSION_DENIED


class BadRequest(CallError):
    code = ErrorCode.BAD_REQUEST


class Overloaded(CallError):
    code = ErrorCode.OVERLOADED


class NoSuchInstance(CallError):
    code = ErrorCode.NO_SUCH_INSTANCE


class UnsupportedVersion(CallError):
    code = ErrorCode.UNSUPPORTED_VERSION


class ProtocolViolation(CallError):
    code = ErrorCode.PROTOCOL_VIOLATION


class BadArguments(CallError):
    """The arguments do not fit the callee's signature (names method and argument)."""

    code = ErrorCode.BAD_ARGUMENTS


class QueueFull(CallError):
    code = ErrorCode.QUEUE_FULL


class NoSuchQueue(CallError):
    code = ErrorCode.NO_SUCH_QUEUE


class StaleDelivery(CallError):
    code = ErrorCode.STALE_DELIVERY


class StorageFailed(CallError):
    code = ErrorCode.STORAGE_FAILED


class ServicePaused(CallError):
    code = ErrorCode.SERVICE_PAUSED


class ServiceFailed(CallError):
    code = ErrorCode.SERVICE_FAILED


class InvalidTransition(CallError):
    code = ErrorCode.INVALID_TRANSITION


class NoSuchRegion(CallError):
    code = ErrorCode.NO_SUCH_REGION


class ConnectionLost(CallError):
    """The connection to the daemon broke before the answer came."""


class CircuitOpen(CallError):
    """The target's circuit breaker is open: the call failed at once, unsent."""


class Closed(CallError):
    """The bus was closed."""


class DecodeError(CallError):
    """A payload was not the MessagePack that was expected."""


_LOCAL_KINDS: Dict[type, str] = {
    ConnectionLost: "connection_lost",
    CircuitOpen: "circuit_open",
    Closed: "closed",
    DecodeError: "decode",
}

_BY_CODE: Dict[int, Type[CallError]] = {
    int(cls.code): cls for cls in CallError.__subclasses__() if cls.code is not None
}


def from_wire(code: int, message: str) -> CallError:
    """The exception for an `Error` frame (an unknown code stays a `CallError`)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else CallError(message, code=code)


class ConnectError(SwitchboardError):
    """Connecting to the daemon failed."""


class Unreachable(ConnectError):
    """Nothing listens at the address (is `switchboard up` running?)."""


class Refused(ConnectError):
    """The daemon refused the handshake (a wrong token, a stale secret...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"the daemon refused the connection ({from_wire(code, '').kind}): {message}")
        self.code = code
        self.reason = message


class HandshakeFailed(ConnectError):
    pass


class UntrustedDaemon(ConnectError):
    """The socket is served by another user's process: no credential is sent to it."""


class InvalidName(SwitchboardError, ValueError):
    """A service, method, topic, pattern, queue or header name breaks the naming rules."""
