"""Retries that do not make an outage worse, as the Rust client's
`switchboard::retry`: a call made with a `RetryPolicy` is tried again after a
failure that allows it — by default only where the call provably never
reached a handler (`Overloaded`, `ServicePaused`, no instance registered
yet); with `idempotent=True` also after a timeout, a lost connection or an
instance gone mid-call; never after the service's own answer (`Rejected`, …).

Waits grow exponentially with full jitter, all within the call's one
timeout, and a budget per target service keeps retries to about a tenth of
the calls made with a policy (after a burst of 10)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict

from .errors import (
    CallError,
    ConnectionLost,
    InstanceGone,
    NoSuchInstance,
    NoSuchService,
    Overloaded,
    ServicePaused,
    ShuttingDown,
    Timeout,
)

_NEVER_RAN = (Overloaded, ServicePaused, NoSuchService, NoSuchInstance)
_MAY_HAVE_RUN = (Timeout, ConnectionLost, InstanceGone, ShuttingDown)
_jitter = random.Random()

#: Retries a budget can hold.
BURST = 10


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried."""

    #: Attempts in all, the first included.
    max_attempts: int = 4
    #: The cap of the first wait (seconds); each further cap doubles.
    initial: float = 0.025
    #: The largest cap (seconds).
    max_delay: float = 1.0
    #: The call may run more than once: retry after a timeout, a lost
    #: connection or an instance gone mid-call too.
    idempotent: bool = False

    def allows(self, error: CallError, attempt: int) -> bool:
        """Whether `error` (of attempt number `attempt`, from 1) allows another."""
        if attempt >= self.max_attempts:
            return False
        return isinstance(error, _NEVER_RAN) or (self.idempotent and isinstance(error, _MAY_HAVE_RUN))

    def backoff(self, attempt: int) -> float:
        """The wait before attempt `attempt + 1`: uniform in zero to the cap."""
        cap = min(self.max_delay, self.initial * 2 ** min(attempt - 1, 20))
        return _jitter.uniform(0.0, cap)


class Budgets:
    """Retry budgets per target service, in tenths of a retry."""

    def __init__(self) -> None:
        self._tenths: Dict[str, int] = {}

    def deposit(self, service: str) -> None:
        self._tenths[service] = min(self._tenths.get(service, BURST * 10) + 1, BURST * 10)

    def withdraw(self, service: str) -> bool:
        left = self._tenths.get(service, BURST * 10)
        if left < 10:
            return False
        self._tenths[service] = left - 10
        return True
