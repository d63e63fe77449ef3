"""Switchboard's Python client: calls, notifications, broadcasts, topics,
durable queues and supervised services on the Switchboard bus.

    import switchboard
    bus = await switchboard.connect()
    reply = await bus.call("billing.charge", {"account": "a", "cents": 5}, timeout=2.0)

The wire protocol is docs/protocol.md; payloads are MessagePack, maps keyed
by field name, so Python values, Rust `#[contract]` types and the CLI's JSON
map onto one another.
"""

from ._connection import default_address, default_socket_path
from ._wire import Caller, Message
from .breaker import BreakerPolicy
from .bus import DEFAULT_TIMEOUT, Bus, connect
from .calls import BroadcastReply
from .errors import (
    BadArguments,
    BadRequest,
    CallError,
    CircuitOpen,
    Closed,
    ConnectError,
    ConnectionLost,
    DecodeError,
    ErrorCode,
    HandshakeFailed,
    InstanceGone,
    InvalidName,
    InvalidTransition,
    NoSuchInstance,
    NoSuchMethod,
    NoSuchQueue,
    NoSuchRegion,
    NoSuchService,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolViolation,
    QueueFull,
    Refused,
    Rejected,
    ServiceFailed,
    ServicePaused,
    ShuttingDown,
    StaleDelivery,
    StorageFailed,
    SwitchboardError,
    Timeout,
    Unreachable,
    UnsupportedVersion,
    UntrustedDaemon,
)
from .hops import Hop, Traced
from .queues import Consumer, Delivery, Queue
from .retry import RetryPolicy
from .serving import Request, Service, current_request
from .topics import Lagged, Subscription
from .trace import TraceParent

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "BadArguments",
    "BadRequest",
    "BreakerPolicy",
    "BroadcastReply",
    "Bus",
    "CallError",
    "Caller",
    "CircuitOpen",
    "Closed",
    "ConnectError",
    "ConnectionLost",
    "Consumer",
    "DecodeError",
    "Delivery",
    "ErrorCode",
    "HandshakeFailed",
    "Hop",
    "InstanceGone",
    "InvalidName",
    "InvalidTransition",
    "Lagged",
    "Message",
    "NoSuchInstance",
    "NoSuchMethod",
    "NoSuchQueue",
    "NoSuchRegion",
    "NoSuchService",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProtocolViolation",
    "Queue",
    "QueueFull",
    "Refused",
    "Rejected",
    "Request",
    "RetryPolicy",
    "Service",
    "ServiceFailed",
    "ServicePaused",
    "ShuttingDown",
    "StaleDelivery",
    "StorageFailed",
    "Subscription",
    "SwitchboardError",
    "Timeout",
    "TraceParent",
    "Traced",
    "Unreachable",
    "UnsupportedVersion",
    "UntrustedDaemon",
    "connect",
    "current_request",
    "default_address",
    "default_socket_path",
]
