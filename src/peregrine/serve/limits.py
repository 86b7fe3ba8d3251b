"""Per-API-key rate limits: requests and tokens per minute, as token buckets.

A request is charged one request and its prompt plus ``max_tokens`` when it is
admitted; what it did not generate is refunded when it ends. A bucket that
cannot pay refuses with the seconds until it could (the 429's Retry-After).
"""

from __future__ import annotations

import threading
import time


class RateLimited(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Bucket:
    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute
        self.level = per_minute
        self.at = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` could be paid (0: now)."""
        if amount > self.capacity:
            return float("inf")
        return max(0.0, (amount - self.level) / self.rate)


class RateLimits:
    def __init__(self, table: dict[str, tuple[str, float, float]]) -> None:
        self._limits = {k: (rpm, tpm) for k, (_, rpm, tpm) in table.items()}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str, kind: str, per_minute: float) -> _Bucket:
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            bucket = self._buckets[(key, kind)] = _Bucket(per_minute)
        return bucket

    def charge(self, key: str, tokens: int) -> None:
        """Pay for one request of ``tokens`` tokens, or raise ``RateLimited``."""
        rpm, tpm = self._limits.get(key, (0.0, 0.0))
        if not rpm and not tpm:
            return
        now = time.monotonic()
        with self._lock:
            need = []
            if rpm:
                need.append((self._bucket(key, "requests", rpm), 1.0, "requests"))
            if tpm:
                need.append((self._bucket(key, "tokens", tpm), float(tokens), "tokens"))
            for bucket, amount, what in need:
                bucket.refill(now)
                wait = bucket.wait_for(amount)
                if wait > 0:
                    if wait == float("inf"):
                        raise RateLimited(f"the request needs {amount:.0f} {what}, more than "
                                          f"this key's {bucket.capacity:.0f} per minute", 60.0)
                    raise RateLimited(f"rate limit of this key reached ({what} per minute)",
                                      wait)
            for bucket, amount, _ in need:
                bucket.level -= amount

    def refund(self, key: str, tokens: int) -> None:
        with self._lock:
            bucket = self._buckets.get((key, "tokens"))
            if bucket is not None and tokens > 0:
                bucket.level = min(bucket.capacity, bucket.level + tokens)
