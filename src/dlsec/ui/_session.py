"""Sessions and CSRF tokens: signed, stateless cookies over a per-process secret.

A session cookie reads ``KEY_ID.EXPIRES.NONCE.MAC`` where ``MAC`` is HMAC-SHA256 under the
dashboard's secret. It names the API key that logged in, never its secret: the key's record is
read again on every request, so a revoked key (or a changed role) takes effect on the next page.
The CSRF token of a session is ``HMAC(secret, "csrf" | NONCE)`` (a synchronizer token derived
from the session, so nothing is stored); the login form, before any session exists, carries
``HMAC(secret, "login" | NONCE)`` for the nonce of a short-lived pre-login cookie. Logging out
forgets the nonce in this process, so a copied cookie stops working too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "Session", "Signer"]

SESSION_COOKIE = "dlsec_ui_session"
LOGIN_COOKIE = "dlsec_ui_login"


@dataclass(frozen=True)
class Session:
    """A verified session: the API key it belongs to, when it ends, its nonce."""

    key_id: str
    expires: int
    nonce: str


class Signer:
    """Makes and checks session cookies and CSRF tokens under one secret."""

    def __init__(self, secret: bytes | None = None, *, lifetime: int = 8 * 3600) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.lifetime = lifetime
        self._ended: dict[str, int] = {}
        self._lock = threading.Lock()

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    def issue(self, key_id: str) -> str:
        """A new session cookie value for ``key_id``."""
        expires = int(time.time()) + self.lifetime
        nonce = secrets.token_urlsafe(18)
        return f"{key_id}.{expires}.{nonce}.{self._mac('session', key_id, str(expires), nonce)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session ``cookie`` proves, or None (missing, malformed, forged, expired or ended)."""
        if not cookie or len(cookie) > 300:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        key_id, expires, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac("session", key_id, expires, nonce)):
            return None
        if int(expires) < time.time():
            return None
        with self._lock:
            if nonce in self._ended:
                return None
        return Session(key_id, int(expires), nonce)

    def end(self, session: Session) -> None:
        """Forget ``session`` (logout): its cookie is refused from now on, in this process."""
        now = time.time()
        with self._lock:
            self._ended = {n: e for n, e in self._ended.items() if e >= now}
            self._ended[session.nonce] = session.expires

    def csrf(self, session: Session) -> str:
        """The CSRF token every form of ``session`` carries."""
        return self._mac("csrf", session.nonce)

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))

    @staticmethod
    def login_nonce() -> str:
        return secrets.token_urlsafe(18)

    def login_token(self, nonce: str) -> str:
        """The CSRF token of the login form shown with the pre-login cookie ``nonce``."""
        return self._mac("login", nonce)

    def check_login_token(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and bool(token) and hmac.compare_digest(str(token), self.login_token(str(nonce)))
