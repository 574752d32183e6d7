"""Registry authentication (distribution's token spec and HTTP Basic).

A registry says how to authenticate in the ``WWW-Authenticate`` header of a 401:
``Basic realm=...`` or ``Bearer realm=...,service=...,scope=...``. For Bearer we ask the
realm for a token for the scope (with our credentials when we have them, anonymously
otherwise) and cache it per scope until shortly before it expires.
"""

from __future__ import annotations

import re
import threading
import time

from ocitool import cjson
from ocitool.errors import AuthError
from ocitool.image.credentials import Credentials
from ocitool.image.httpclient import Client, HTTPError, basic_authorization

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
MIN_TOKEN_SECONDS = 60  # the token spec's floor for expires_in
EXPIRY_MARGIN = 10


class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    __slots__ = ("scheme", "params")

    def __init__(self, scheme: str, params: dict[str, str] | None = None):
        self.scheme = scheme  # "bearer" or "basic"
        self.params = {} if params is None else params


def parse_challenge(header: str) -> Challenge | None:
    """Parse the first challenge of a ``WWW-Authenticate`` header, or None when absent."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def basic_header(credentials: Credentials) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    return basic_authorization(credentials.username, credentials.password)


class TokenCache:
    """Bearer tokens per (realm, service, scope), reused until they expire; thread-safe."""

    def __init__(self, http: Client, credentials: Credentials | None):
        self._http = http
        self._credentials = credentials
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def header(self, challenge: Challenge, scope: str, refresh: bool = False) -> str:
        """``Authorization`` for ``scope`` under ``challenge``; ``refresh`` drops a cached token."""
        key = (challenge.params.get("realm", ""), challenge.params.get("service", ""), scope)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not refresh and cached[1] > time.monotonic():
                return "Bearer " + cached[0]
            token, lifetime = self._fetch(challenge, scope)
            self._tokens[key] = (token, time.monotonic() + max(lifetime, MIN_TOKEN_SECONDS) - EXPIRY_MARGIN)
            return "Bearer " + token

    def _fetch(self, challenge: Challenge, scope: str) -> tuple[str, int]:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError("registry asked for a bearer token but named no realm to get it from")
        from urllib.parse import urlencode  # only registries that want tokens need it
        params = {"service": challenge.params["service"]} if "service" in challenge.params else {}
        if scope:
            params["scope"] = scope
        headers = {"Authorization": basic_header(self._credentials)} if self._credentials else {}
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}" if params else realm
        try:
            response = self._http.request("GET", url, headers)
            body = response.content
        except HTTPError as exc:
            raise AuthError(f"cannot get a token from {realm}: {exc}") from None
        if response.status_code in (401, 403):
            who = f"user {self._credentials.username!r}" if self._credentials else "anonymous access"
            raise AuthError(f"token server {realm} refused {who}: check the credentials (--creds, --authfile)")
        if response.status_code != 200:
            raise AuthError(f"token server {realm} answered HTTP {response.status_code}")
        try:
            body = cjson.loads(body)
            token = body.get("token") or body.get("access_token")
            lifetime = int(body.get("expires_in") or MIN_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token:
            raise AuthError(f"token server {realm} answered without a token")
        return token, lifetime
