"""A rate limit per caller: a token bucket each, refilled at a steady rate. Pure: both faces use it (the
API per key or address, the UI per login or address)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import RateLimited


class RateLimit(BaseModel):
    """A token bucket per caller: `burst` requests at once, refilled at `requests_per_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


@dataclass
class TokenBuckets:
    """One bucket per caller identity, in this process. Across N replicas a caller can get up to N times
    the rate (each replica grants its own burst and refill); Serve spreads a caller's requests over the
    replicas, so in practice it is close to N times too (docs/operations.md)."""

    limit: RateLimit
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # identity: (tokens, at)
    max_callers: int = 100_000

    def admit(self, identity: str, who: str = "caller") -> None:
        """A token taken for `identity`, or RateLimited saying the limit and when to try again."""
        if wait := self.take(identity):
            raise RateLimited(
                f"Too many requests: {self.limit.requests_per_s:g} per second (bursts of {self.limit.burst}) "
                f"per {who}; try again in {wait:.1f} s.",
                wait,
            )

    def take(self, identity: str) -> float:
        """0 when `identity` may go ahead (a token taken), else the seconds until it may."""
        now = self.clock()
        tokens, at = self.buckets.get(identity, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - at) * self.limit.requests_per_s)
        if tokens < 1:
            self.buckets[identity] = (tokens, now)
            return (1 - tokens) / self.limit.requests_per_s
        if len(self.buckets) >= self.max_callers:
            self.buckets.clear()  # memory stays bounded; every caller starts again with a full bucket
        self.buckets[identity] = (tokens - 1, now)
        return 0.0
