"""A circuit breaker per participant service.

A service that keeps failing (408, 429, 5xx, timeouts, refused connections)
opens its breaker. While it is open, new workflows that use the service are
not admitted (503 suspended), and calls already running keep retrying it at
a slow interval without spending their retry budget; the first success
closes it and the interval drops back to the fast backoff. Both intervals
carry jitter. A definite business answer (any other 4xx) counts as healthy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Breaker", "Breakers", "BREAKERS_MAX"]

BREAKERS_MAX = 4096


@dataclass
class Breaker:
    failures_to_open: int
    consecutive_failures: int = 0
    open: bool = False
    opened_total: int = 0

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.open = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if not self.open and self.consecutive_failures >= self.failures_to_open:
            self.open = True
            self.opened_total += 1


@dataclass
class Breakers:
    failures_to_open: int
    slow_interval_s: float
    rng: random.Random = field(default_factory=random.Random)
    by_service: dict[str, Breaker] = field(default_factory=dict)

    def of(self, service: str) -> Breaker:
        breaker = self.by_service.get(service)
        if breaker is None:
            if len(self.by_service) >= BREAKERS_MAX:
                self.by_service.pop(next(iter(self.by_service)))
            breaker = self.by_service[service] = Breaker(self.failures_to_open)
        return breaker

    def is_open(self, service: str) -> bool:
        breaker = self.by_service.get(service)
        return breaker is not None and breaker.open

    def open_services(self) -> list[str]:
        return sorted(name for name, b in self.by_service.items() if b.open)

    def slow_wait_s(self) -> float:
        return self.slow_interval_s * self.rng.uniform(0.5, 1.5)

    def view(self) -> dict:
        return {
            name: {"open": b.open, "consecutive_failures": b.consecutive_failures, "opened_total": b.opened_total}
            for name, b in sorted(self.by_service.items())
        }
