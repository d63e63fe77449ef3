"""Serving methods: a Python function becomes a bus method.

Each method's signature comes from the function's parameters and type
hints: the request's payload is a MessagePack map from argument name to
value (what a Rust `#[contract]` client and the CLI's JSON send), checked
against the hints and passed as keyword arguments; the return value is the
reply. The signature text (`double(x: int) -> int`) is registered, so
`switchboard ls SERVICE` shows it. Arguments that do not fit are answered
`bad_arguments`, naming the method and the argument.

Handlers see the request being served through `current_request()`: the
caller as the daemon verified it, the headers and the deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
import typing
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

import msgpack

from . import names
from ._wire import Caller
from .errors import BadArguments, CallError

Handler = Callable[..., Union[Any, Awaitable[Any]]]


@dataclass(frozen=True)
class Request:
    """The request a handler is serving."""

    service: str
    method: str
    instance: int
    caller: Caller
    headers: Dict[str, str]
    payload: bytes
    #: `time.monotonic()` by which the caller wants the reply; `None` for a notification.
    deadline: Optional[float]

    @property
    def is_notification(self) -> bool:
        return self.deadline is None

    def remaining(self) -> Optional[float]:
        """Seconds left before the caller's deadline (`None` for a notification)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[Optional[Request]] = contextvars.ContextVar("switchboard_request", default=None)


def current_request() -> Optional[Request]:
    """The request the running handler serves (`None` outside a handler)."""
    return _current.get()


#: Kept back from an inherited deadline so the answer can still reach the
#: caller that set it (as the Rust client's `deadline::MARGIN`).
DEADLINE_MARGIN = 0.005


def inherited_timeout(timeout: float) -> float:
    """The timeout of a call made now: inside a handler, no later than the
    served request's deadline minus the margin. Raises `Timeout` (nothing is
    sent) when that deadline has passed."""
    request = _current.get()
    if request is None or request.deadline is None:
        return timeout
    left = request.deadline - DEADLINE_MARGIN - time.monotonic()
    if left <= 0:
        from .errors import Timeout

        raise Timeout("the deadline of the request being served has passed: not sent")
    return min(timeout, left)


def _type_name(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "Any"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def fits(value: Any, hint: Any) -> bool:
    """Whether a decoded MessagePack value fits a type hint (unknown hints fit)."""
    if hint is inspect.Parameter.empty or hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(fits(value, arg) for arg in args)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, dict):
        return isinstance(value, hint)
    if hint is bytes:
        return isinstance(value, (bytes, bytearray))
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is list and args:
            return all(fits(item, args[0]) for item in value)
        return True
    if origin is dict:
        return isinstance(value, dict) and all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    return True


class Method:
    """One served method: the function, its parameters and its signature text."""

    def __init__(self, name: str, function: Handler) -> None:
        names.method(name)
        self.name = name
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        signature = inspect.signature(function)
        try:
            hints = typing.get_type_hints(function)
        except (NameError, TypeError):
            hints = {}
        self.params: List[Tuple[str, Any, bool]] = []
        self.takes_any = False
        for param in signature.parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                self.takes_any = True
                continue
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                raise TypeError(f"method {name}: arguments travel by name; *args and positional-only are not allowed")
            hint = hints.get(param.name, inspect.Parameter.empty)
            self.params.append((param.name, hint, param.default is inspect.Parameter.empty))
        args = ", ".join(f"{pname}: {_type_name(hint)}" for pname, hint, _ in self.params)
        returns = hints.get("return", signature.return_annotation)
        self.signature = f"{name}({args})" + (
            "" if returns is inspect.Signature.empty else f" -> {_type_name(returns)}"
        )

    def bind(self, payload: bytes) -> Dict[str, Any]:
        """The keyword arguments of a request, or `BadArguments` naming what does not fit."""
        method = self.name
        if not payload:
            values: Any = {}
        else:
            try:
                values = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            except Exception as err:
                raise BadArguments(f"arguments of {method}: not MessagePack ({err})") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise BadArguments(
                f"arguments of {method}: expected a map of argument names to values, got {_kind(values)}"
            )
        known = {pname for pname, _, _ in self.params}
        for key in values:
            if not isinstance(key, str):
                raise BadArguments(f"arguments of {method}: argument names must be strings")
            if key not in known and not self.takes_any:
                takes = ", ".join(sorted(known)) or "none"
                raise BadArguments(f"argument `{key}` of {method} is not expected (takes: {takes})")
        for pname, hint, required in self.params:
            if pname not in values:
                if required and not fits(None, hint):
                    raise BadArguments(f"argument `{pname}` of {method} is missing")
                continue
            if not fits(values[pname], hint):
                raise BadArguments(
                    f"argument `{pname}` of {method} ({_kind(values[pname])}): expected {_type_name(hint)}"
                )
        return dict(values)


def methods_of(handlers: Mapping[str, Handler]) -> Dict[str, Method]:
    if not handlers:
        raise ValueError("a service needs at least one method")
    return {name: Method(name, function) for name, function in handlers.items()}


class Service:
    """A service this connection serves; `stop()` unregisters it.

    Registered again (as a new instance) after every reconnect.
    """

    def __init__(self, bus: Any, name: str, methods: Dict[str, Method], max_concurrency: int) -> None:
        self.name = name
        self.methods = methods
        self.instance = 0
        self.running = 0
        self.max_concurrency = max_concurrency
        self._bus = bus
        self._stopped = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def register_spec(self) -> List[Tuple[bytes, str]]:
        return [(name.encode(), method.signature) for name, method in self.methods.items()]

    async def stop(self) -> None:
        """Unregisters: new calls go elsewhere; calls being served finish."""
        if not self._stopped:
            self._stopped = True
            await self._bus._unregister(self)

    @property
    def stopped(self) -> bool:
        return self._stopped


def error_of(err: BaseException, method: str) -> CallError:
    """What a handler's exception answers: a `CallError` passes through with its
    code; anything else is `rejected` naming the exception."""
    if isinstance(err, CallError):
        return err
    from .errors import Rejected

    return Rejected(f"{method} raised {type(err).__name__}: {err}")
