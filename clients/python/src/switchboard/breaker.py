"""Circuit breakers, as the Rust client's `switchboard::breaker`: per target
service, a breaker opens when the share of failed calls in a window reaches
the policy's rate, fails calls at once (`CircuitOpen`) while open, lets one
probe call through after a cool-down (half-open), and closes when the probe
succeeds. Only signs of an unwell service count — timeouts, `overloaded`,
instances gone, a failed service — never the service's own answers.

Off unless a policy is set (`Bus.set_breakers`, `Bus.set_breaker_for`); the
daemon's own (`$`) services are never guarded. Pure: the caller passes the
time and does the I/O (telling the daemon, `switchboard ls --breakers`)."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple

from .errors import CallError, CircuitOpen, InstanceGone, Overloaded, ServiceFailed, Timeout

_FAILURES = (Timeout, Overloaded, InstanceGone, ServiceFailed)


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    #: Outcomes older than this (seconds) are forgotten.
    window: float = 10.0
    #: Calls in the window before the rate is judged.
    min_calls: int = 20
    #: Share of failures (0 to 1) that opens the breaker.
    failure_rate: float = 0.5
    #: How long (seconds) it stays open before a probe.
    cool_down: float = 5.0


class Admission(enum.Enum):
    """How a call was let through."""

    GO = "go"
    #: The half-open breaker's one probe: its outcome decides.
    PROBE = "probe"


def is_failure(error: Optional[CallError]) -> bool:
    """Whether a call's outcome counts against the service."""
    return isinstance(error, _FAILURES)


class Breaker:
    """One service's breaker."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        #: `closed`, `open` or `half-open`, as `switchboard ls --breakers` shows.
        self.state = "closed"
        self.open_until = 0.0
        self._outcomes: Deque[Tuple[float, bool]] = deque()

    def admit(self, now: float) -> Tuple[Optional[Admission], float]:
        """`(admission, 0)`, or `(None, seconds it stays open)` to refuse."""
        if self.state == "closed":
            return Admission.GO, 0.0
        if self.state == "open" and now < self.open_until:
            return None, self.open_until - now
        if self.state == "open":
            self.state = "half-open"
            return Admission.PROBE, 0.0
        return None, 0.0

    def record(self, now: float, admission: Admission, failed: bool) -> bool:
        """Notes a call's outcome; whether the breaker opened or closed."""
        was_closed = self.state == "closed"
        if self.state == "half-open" and admission is Admission.PROBE:
            if failed:
                self._open(now)
            else:
                self.state = "closed"
                self._outcomes.clear()
        elif self.state == "closed" and admission is Admission.GO:
            self._outcomes.append((now, failed))
            while self._outcomes and now - self._outcomes[0][0] > self.policy.window:
                self._outcomes.popleft()
            calls = len(self._outcomes)
            failures = sum(1 for _, bad in self._outcomes if bad)
            if calls >= self.policy.min_calls and failures >= self.policy.failure_rate * calls:
                self._open(now)
        # A call admitted before the breaker changed state says nothing now.
        return was_closed != (self.state == "closed")

    def _open(self, now: float) -> None:
        self.state = "open"
        self.open_until = now + self.policy.cool_down
        self._outcomes.clear()


class Breakers:
    """Every breaker of a bus: a default policy, services' own settings."""

    def __init__(self) -> None:
        self._policy: Optional[BreakerPolicy] = None
        self._own: Dict[str, Optional[BreakerPolicy]] = {}
        self._by_service: Dict[str, Breaker] = {}
        #: Whether any policy is set: the call path reads only this when off.
        self.enabled = False

    def set_policy(self, policy: Optional[BreakerPolicy]) -> None:
        self._policy = policy
        self._by_service = {s: b for s, b in self._by_service.items() if s in self._own}
        self._update_enabled()

    def set_policy_for(self, service: str, policy: Optional[BreakerPolicy]) -> None:
        self._own[service] = policy
        self._by_service.pop(service, None)
        self._update_enabled()

    def _update_enabled(self) -> None:
        self.enabled = self._policy is not None or any(p is not None for p in self._own.values())

    def admit(self, service: str, now: float) -> Optional[Admission]:
        """How a call to `service` goes (`None`: unguarded); raises
        `CircuitOpen` while its breaker is open."""
        if not self.enabled or service.startswith("$"):
            return None
        breaker = self._by_service.get(service)
        if breaker is None:
            policy = self._own.get(service, self._policy)
            if policy is None:
                return None
            breaker = self._by_service[service] = Breaker(policy)
        admission, left = breaker.admit(now)
        if admission is None:
            raise CircuitOpen(f"{service} keeps failing; calls to it fail at once for {int(left * 1000)} ms more")
        return admission

    def record(self, service: str, admission: Admission, error: Optional[CallError], now: float) -> bool:
        breaker = self._by_service.get(service)
        return breaker is not None and breaker.record(now, admission, is_failure(error))

    def not_closed(self) -> List[Tuple[str, str]]:
        """Each service whose breaker is open or half-open, by name."""
        return sorted((s, b.state) for s, b in self._by_service.items() if b.state != "closed")

    def report(self) -> Dict[str, List[Dict[str, str]]]:
        """What the daemon is told (`$sys.daemon.report_breakers`)."""
        return {"breakers": [{"service": s, "state": state} for s, state in self.not_closed()]}
