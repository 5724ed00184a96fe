"""Bearer API keys, rate limits, and signed stream URLs.

- No or malformed ``Authorization`` header → 401 (with ``WWW-Authenticate``);
  a key that is not configured → 403. Keys are compared as bytes, so any header
  value (non-ASCII included) is a plain 403, never an error.
- Each key gets a token bucket of ``rate_limit_per_minute`` → 429 with ``Retry-After``.
- Failed authentications are charged to the client address in a separate bucket
  (``auth_failures_per_minute``); once it is empty every authenticated request
  from that address is 429 until it refills, a right key included (else the
  429-vs-200 difference would let guessing go on at full speed).
- ``<video src>`` cannot send a header, so media views carry a stream URL signed
  with HMAC (media id + expiry) instead of the key itself.

:mod:`mediaflow_gateway.api.guard` applies all of this before a request body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.settings import GatewaySettings

ANONYMOUS = "anonymous"
MAX_EXPIRES_DIGITS = 12  # a Unix time until the year 33658
SIG_HEX_CHARS = 64


def _as_bytes(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")  # how Starlette decodes header bytes
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def key_id(key: bytes | str) -> str:
    # Identifies a key in metrics and limits without keeping the key itself around.
    return hashlib.sha256(_as_bytes(key)).hexdigest()[:12]


class KeyRing:
    def __init__(self, settings: GatewaySettings):
        self._keys = [k.get_secret_value().encode("utf-8", "surrogatepass") for k in settings.api_keys if k.get_secret_value()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: bytes | str | None) -> str:
        """The caller's key id, or ApiError 401/403."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = _as_bytes(authorization or b"").partition(b" ")
        token = token.strip(b" \t")
        if scheme.lower() != b"bearer" or not token:
            raise ApiError(401, "missing bearer API key (Authorization: Bearer <key>)",
                           headers={"WWW-Authenticate": 'Bearer realm="mediaflow"'})
        # Every key is compared (no early exit): the time taken tells nothing about which matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise ApiError(403, "this API key is not valid")
        return key_id(token)


class RateLimiter:
    """Token bucket per key: ``per_minute`` requests, refilled continuously.

    At most ``max_keys`` buckets are kept (least recently used dropped first: a
    dropped bucket starts full again, which only ever errs on the caller's side)."""

    def __init__(self, per_minute: int, clock=time.monotonic, *, max_keys: int = 100_000,
                 message: str | None = None):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self.message = message or f"rate limit of {per_minute} requests per minute exceeded"
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def _refuse(self, tokens: float) -> ApiError:
        retry = max(1, int((1.0 - tokens) / self.rate + 0.999))
        return ApiError(429, self.message, headers={"Retry-After": str(retry)})

    def _put(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def check(self, key: str) -> None:
        """Take one token, or ApiError 429 when there is none."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                self._put(key, tokens, now)
                raise self._refuse(tokens)
            self._put(key, tokens - 1.0, now)

    def refuse_if_empty(self, key: str) -> None:
        """ApiError 429 when ``key`` has no token left; takes none."""
        with self._lock:
            if key not in self._buckets:
                return
            tokens = self._tokens(key, self.clock())
            if tokens < 1.0:
                raise self._refuse(tokens)

    def charge(self, key: str) -> None:
        """Take one token, if any is left (failures are charged after the fact)."""
        with self._lock:
            now = self.clock()
            self._put(key, max(0.0, self._tokens(key, now) - 1.0), now)


def failure_limiter(per_minute: int, clock=time.monotonic) -> RateLimiter:
    return RateLimiter(per_minute, clock, message="too many failed authentication attempts from this address")


class StreamSigner:
    def __init__(self, settings: GatewaySettings):
        self._secret = settings.signing_secret.get_secret_value().encode()
        self.ttl = settings.stream_url_ttl_seconds

    def _mac(self, media_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{media_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, media_id: str) -> str:
        expires = int(time.time()) + self.ttl
        return f"/v1/media/{media_id}/stream?expires={expires}&sig={self._mac(media_id, expires)}"

    def verify(self, media_id: str, expires: int | str | None, sig: str | None) -> bool:
        """Whether ``sig`` signs ``media_id`` until ``expires`` (not passed). Any input is a
        plain False: too many digits, non-ASCII, not hex."""
        if expires is None or not sig:
            return False
        if isinstance(expires, str):
            if not (expires.isascii() and expires.isdigit() and len(expires) <= MAX_EXPIRES_DIGITS):
                return False
            expires = int(expires)
        if expires >= 10**MAX_EXPIRES_DIGITS or expires < time.time() or len(sig) != SIG_HEX_CHARS or not sig.isascii():
            return False
        return hmac.compare_digest(sig.encode("ascii"), self._mac(media_id, expires).encode("ascii"))
