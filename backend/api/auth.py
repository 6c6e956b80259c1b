"""Who may call the API, and how often: API keys with scopes, and a token bucket per caller.

Keys come from $RETRIEVER_API_KEYS and the file named by $RETRIEVER_API_KEYS_FILE, each
`name=secret:scope[+scope]`, comma- or line-separated (`#` starts a comment in the file). Only the
secrets' SHA-256 digests are kept, compared in constant time; the file is read again when it changes,
so a key can be added or revoked without a restart. With no key configured, every caller may do
everything (the embedded default on loopback; `retriever up` refuses that beyond loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import NotAllowed, NotAuthenticated
from shared.rate_limit import RateLimit, TokenBuckets

SCOPES = frozenset({"read", "write", "admin"})
KEYS_ENV = "RETRIEVER_API_KEYS"
KEYS_FILE_ENV = "RETRIEVER_API_KEYS_FILE"
FILE_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the secret
    scopes: frozenset[str]


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_keys(text: str, where: str = KEYS_ENV) -> list[ApiKey]:
    """Keys from `name=secret:scope[+scope]` entries, comma- or line-separated; ValueError naming the
    entry's position (never its secret) when one is malformed."""
    keys = []
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    entries = [entry.strip() for line in lines for entry in line.split(",") if entry.strip()]
    for number, entry in enumerate(entries, 1):
        name, _, rest = entry.partition("=")
        secret, _, scopes = rest.rpartition(":")
        granted = frozenset(scope.strip() for scope in scopes.split("+") if scope.strip())
        problem = (
            "expected name=secret:scope[+scope]"
            if not (name.strip() and secret and granted)
            else f"unknown scope {sorted(granted - SCOPES)[0]!r} (read, write, admin)"
            if granted - SCOPES
            else None
        )
        if problem:
            raise ValueError(f"{where}: key {number} ({name.strip() or '?'}): {problem}")
        keys.append(ApiKey(name.strip(), digest(secret), granted))
    names = [key.name for key in keys]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{where}: key name {duplicated[0]!r} is given twice")
    return keys


class KeyRing:
    """The configured keys, the file's re-read when it changes (checked at most once a second)."""

    def __init__(self, from_env: str = "", path: str | None = None, clock: Callable[[], float] = time.monotonic):
        self.env_keys = parse_keys(from_env)
        self.path = Path(path) if path else None
        self.clock = clock
        self._lock = threading.Lock()
        self._file_keys: list[ApiKey] = []
        self._file_stamp: tuple[int, int] | None = None
        self._checked_at = -float("inf")
        self._refresh_file()  # a missing or malformed file fails the start, loudly

    @classmethod
    def from_environment(cls) -> KeyRing:
        return cls(os.environ.get(KEYS_ENV, ""), os.environ.get(KEYS_FILE_ENV) or None)

    def keys(self) -> list[ApiKey]:
        if self.path is not None and self.clock() - self._checked_at >= FILE_CHECK_INTERVAL_S:
            with self._lock:
                try:
                    self._refresh_file()
                except (OSError, ValueError):
                    pass  # a file being rewritten, or a typo: keep the keys that worked until it is right
        return self.env_keys + self._file_keys

    def _refresh_file(self) -> None:
        if self.path is None:
            return
        self._checked_at = self.clock()
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._file_stamp:
            self._file_keys = parse_keys(self.path.read_text(), str(self.path))
            self._file_stamp = stamp

    def find(self, secret: str) -> ApiKey | None:
        """The key with this secret. Every key is compared, in constant time, so the answer's timing
        says nothing about which digest came close."""
        wanted = digest(secret)
        found = None
        for key in self.keys():
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's name, or None when the API is open (no key configured)."""

    key: str | None
    address: str

    @property
    def identity(self) -> str:
        """What rate limits and idempotency keys are counted by."""
        return f"key:{self.key}" if self.key else f"address:{self.address}"


class Access:
    """The API's gate: the caller's key and scope, and on the expensive routes its rate."""

    def __init__(self, keys: KeyRing, rate_limit: RateLimit | None = None) -> None:
        self.keys = keys
        self.buckets = TokenBuckets(rate_limit) if rate_limit else None

    def set_rate_limit(self, rate_limit: RateLimit | None) -> None:
        """A new limit (a `serve deploy`) starts every caller with a full bucket; the same one keeps them."""
        if rate_limit is None or self.buckets is None or self.buckets.limit != rate_limit:
            self.buckets = TokenBuckets(rate_limit) if rate_limit else None

    def admit(self, address: str, secret: str | None, scope: str, limited: bool) -> Caller:
        """The caller, when its key has `scope` (any caller when no key is configured) and, on a
        `limited` route, it is within its rate; else NotAuthenticated, NotAllowed or RateLimited."""
        caller = Caller(None, address)
        if self.keys.keys():
            if not secret:
                raise NotAuthenticated("An API key is needed: send the header Authorization: Bearer <key>.")
            key = self.keys.find(secret)
            if key is None:
                raise NotAuthenticated("The API key is not known (revoked, or mistyped).")
            if scope not in key.scopes:
                raise NotAllowed(f"The API key {key.name!r} does not have the {scope!r} scope this needs.")
            caller = Caller(key.name, address)
        if limited and self.buckets is not None:
            self.buckets.admit(caller.identity)
        return caller
