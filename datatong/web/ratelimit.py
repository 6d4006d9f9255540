"""Rate limits of the login endpoints (``POST /api/v1/auth/token``,
``/api/v1/auth/client-token``, the pages' ``POST /login`` and its code step).

A sliding-window log per key — the client address and the account (username or
client id) — allowing ``settings.login_rate_per_minute`` attempts in any 60 seconds
(0 turns it off). It complements the lockout (orgs/security.py): the lockout protects one
account across every server, the limiter slows one source spraying many accounts.

The limiter lives in the memory of each API process: with N processes behind a load
balancer a source gets up to N times the limit. That is acceptable for its purpose
(the per-account lockout is in the database and holds across processes); a shared
store would be needed for an exact cluster-wide limit. Behind a reverse proxy, run
Uvicorn with ``--proxy-headers --forwarded-allow-ips=<proxy>`` so the client address is
the caller's, not the proxy's (docs/deployment.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from fastapi import FastAPI, Request

from datatong.errors import AppError

WINDOW_SECONDS = 60.0
MAX_KEYS = 100_000  # memory bound: beyond it, keys whose window has passed are dropped


class RateLimited(AppError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"尝试过于频繁，请 {retry_after} 秒后再试",
            f"Too many attempts; retry in {retry_after} s",
            details=[{"retry_after": retry_after}],
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class SlidingWindowLimiter:
    def __init__(self, window: float = WINDOW_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, keys: list[str], limit: int, now: float | None = None) -> int:
        """Count one attempt against every key, unless one of them is already at
        ``limit`` in the window: then nothing is counted and the answer is the seconds
        until that key allows again. 0 means allowed."""
        if limit <= 0:
            return 0
        now = time.monotonic() if now is None else now
        horizon = now - self.window
        with self._lock:
            wait = 0.0
            for key in keys:
                hits = self._hits.get(key)
                if hits is None:
                    continue
                while hits and hits[0] <= horizon:
                    hits.popleft()
                if len(hits) >= limit:
                    wait = max(wait, hits[len(hits) - limit] + self.window - now)
            if wait > 0:
                return max(1, math.ceil(wait))
            if len(self._hits) >= self.max_keys:
                self._prune(horizon)
            for key in keys:
                self._hits.setdefault(key, deque()).append(now)
            return 0

    def _prune(self, horizon: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


_create_lock = threading.Lock()


def limiter_for(app: FastAPI) -> SlidingWindowLimiter:
    limiter: SlidingWindowLimiter | None = getattr(app.state, "login_limiter", None)
    if limiter is None:
        with _create_lock:
            limiter = getattr(app.state, "login_limiter", None)
            if limiter is None:
                limiter = app.state.login_limiter = SlidingWindowLimiter()
    return limiter


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_login_rate(request: Request, account: str | None, kind: str = "login") -> None:
    """Raise ``RateLimited`` (429 + Retry-After) when the caller's address or the account
    has used up its attempts; otherwise count this attempt."""
    limit = int(getattr(request.app.state.settings, "login_rate_per_minute", 0) or 0)
    keys = [f"{kind}:addr:{client_address(request)}"]
    if account:
        keys.append(f"{kind}:acct:{account.strip().lower()[:128]}")
    retry_after = limiter_for(request.app).hit(keys, limit)
    if retry_after:
        raise RateLimited(retry_after)
