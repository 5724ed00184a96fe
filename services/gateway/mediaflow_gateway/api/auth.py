"""Bearer API keys, a per-key rate limit, and signed stream URLs.

- No or malformed ``Authorization`` header → 401 (with ``WWW-Authenticate``);
  a key that is not configured → 403.
- Each key gets a token bucket of ``rate_limit_per_minute`` → 429 with ``Retry-After``.
- ``<video src>`` cannot send a header, so media views carry a stream URL signed
  with HMAC (media id + expiry) instead of the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.settings import GatewaySettings

ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    # Identifies a key in metrics and limits without keeping the key itself around.
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyRing:
    def __init__(self, settings: GatewaySettings):
        self._keys = {k.get_secret_value() for k in settings.api_keys if k.get_secret_value()}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The caller's key id, or ApiError 401/403."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing bearer API key (Authorization: Bearer <key>)",
                           headers={"WWW-Authenticate": 'Bearer realm="mediaflow"'})
        token = token.strip()
        if not any(hmac.compare_digest(token, key) for key in self._keys):
            raise ApiError(403, "this API key is not valid")
        return key_id(token)


class RateLimiter:
    """Token bucket per key: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                retry = max(1, int((1.0 - tokens) / self.rate + 0.999))
                raise ApiError(429, f"rate limit of {int(self.capacity)} requests per minute exceeded",
                               headers={"Retry-After": str(retry)})
            self._buckets[key] = (tokens - 1.0, now)


class StreamSigner:
    def __init__(self, settings: GatewaySettings):
        self._secret = settings.signing_secret.get_secret_value().encode()
        self.ttl = settings.stream_url_ttl_seconds

    def _mac(self, media_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{media_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, media_id: str) -> str:
        expires = int(time.time()) + self.ttl
        return f"/v1/media/{media_id}/stream?expires={expires}&sig={self._mac(media_id, expires)}"

    def verify(self, media_id: str, expires: int | None, sig: str | None) -> bool:
        if expires is None or not sig or expires < time.time():
            return False
        return hmac.compare_digest(sig, self._mac(media_id, expires))
