"""A client for one registry endpoint (distribution-spec v2, pull side).

It settles the scheme once (HTTPS, or plain HTTP for insecure registries), authenticates
when challenged, retries transient failures (connection errors, 5xx, 429 with
``Retry-After``) with bounded backoff, follows redirects without carrying
``Authorization`` to other hosts, and resumes interrupted blob downloads with ``Range``.
"""

from __future__ import annotations

import threading
import time

from ocitool.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError
from ocitool.image.auth import Challenge, TokenCache, basic_header, parse_challenge
from ocitool.image.credentials import Credentials
from ocitool.image.digest import DigestVerifier, sha256_digest, verify_bytes
from ocitool.image.httpclient import URL, Client, HTTPError, ProxyError, Response, TLSError
from ocitool.image.manifest import ACCEPT, MAX_MANIFEST_BYTES

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from ocitool.image.store import BlobWriter

    T = TypeVar("T")

CHUNK = 1 << 20
MAX_REDIRECTS = 5


class RetryPolicy:
    """How hard to try: consecutive failed attempts, and backoff between them."""

    __slots__ = ("attempts", "base_delay", "max_delay", "max_retry_after")

    def __init__(self, attempts: int = 5, base_delay: float = 0.5, max_delay: float = 8.0,
                 max_retry_after: float = 30.0):
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.base_delay * 2 ** (attempt - 1), self.max_delay)


class ManifestResponse:
    """A manifest as the registry sent it, verified against its digest."""

    __slots__ = ("data", "media_type", "digest")

    def __init__(self, data: bytes, media_type: str, digest: str):
        self.data = data
        self.media_type = media_type
        self.digest = digest


class MemorySink:
    """A blob destination in memory, with the same interface as the store's BlobWriter."""

    def __init__(self, digest: str, size: int):
        self.size = size
        self.digest = digest
        self.data = bytearray()
        self.verifier = DigestVerifier(digest, size)

    @property
    def written(self) -> int:
        return len(self.data)

    def write(self, chunk: bytes) -> None:
        self.verifier.update(chunk)
        self.data += chunk

    def reset(self) -> None:
        self.data.clear()
        self.verifier = DigestVerifier(self.digest, self.size)


class _Transient(Exception):
    """A failure worth retrying (the connection broke, 5xx, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def pull_scope(repository: str) -> str:
    """The token scope for reading ``repository``."""
    return f"repository:{repository}:pull"


class RegistryClient:
    """Talks to one registry host for one set of credentials; safe to share between threads."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None,
                 retry: RetryPolicy = RetryPolicy()):
        self.host = host
        self.insecure = insecure
        self.retry = retry
        self._credentials = credentials
        self._http = Client(verify=not insecure)
        self._tokens = TokenCache(self._http, credentials)
        self._challenge: Challenge | None = None
        self._base: str | None = None
        self._base_lock = threading.Lock()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    # -- public operations --------------------------------------------------

    def get_manifest(self, repository: str, target: str) -> ManifestResponse:
        """Fetch the manifest or index tagged or digested ``target``, verified."""
        what = f"{self.host}/{repository}:{target}" if ":" not in target else f"{self.host}/{repository}@{target}"

        def attempt() -> ManifestResponse:
            response = self._request("GET", f"/v2/{repository}/manifests/{target}", pull_scope(repository),
                                     headers={"Accept": ACCEPT})
            _raise_for_status(response, what)
            data = _read_limited(response, MAX_MANIFEST_BYTES, what)
            return ManifestResponse(data, response.headers.get("Content-Type", ""),
                                    _manifest_digest(data, target, response, what))

        return self._retrying(what, attempt)

    def fetch_blob(self, repository: str, descriptor: dict[str, Any], writer: BlobWriter | MemorySink,
                   on_bytes: Callable[[int], None] = lambda n: None) -> None:
        """Stream a blob into ``writer``, resuming with ``Range`` after a broken connection."""
        digest = descriptor["digest"]
        what = f"blob {digest} of {self.host}/{repository}"

        def attempt() -> None:
            offset = writer.written
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._request("GET", f"/v2/{repository}/blobs/{digest}", pull_scope(repository),
                                     headers=headers)
            _raise_for_status(response, what)
            if offset and not _resumes_at(response, offset):
                on_bytes(-offset)
                writer.reset()
            try:
                for chunk in response.iter_content(CHUNK):
                    writer.write(chunk)
                    on_bytes(len(chunk))
            except HTTPError as exc:
                raise _Transient(f"connection broke after {writer.written} bytes ({exc})") from None
            if writer.size is not None and writer.written < writer.size:
                raise _Transient(f"body ended after {writer.written} of {writer.size} bytes")

        self._retrying(what, attempt, progress=lambda: writer.written)

    def get_blob_bytes(self, repository: str, descriptor: dict[str, Any]) -> bytes:
        """A small blob (a config), downloaded into memory and verified."""
        sink = MemorySink(descriptor["digest"], descriptor["size"])
        self.fetch_blob(repository, descriptor, sink)
        sink.verifier.verify()
        return bytes(sink.data)

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``, following ``Link`` pagination."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        while path:
            response = self._retrying(f"{self.host}/{repository} tags",
                                      lambda p=path: self._request_ok("GET", p, pull_scope(repository),
                                                                      f"{self.host}/{repository}"))
            try:
                tags.extend(response.json().get("tags") or [])
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}: tag list of {repository} is not valid JSON") from None
            path = _next_page(response.headers.get("Link", ""))
        return tags

    # -- plumbing --------------------------------------------------------------

    def _request_ok(self, method: str, path: str, scope: str, what: str) -> Response:
        response = self._request(method, path, scope)
        _raise_for_status(response, what)
        return response

    def _retrying(self, what: str, attempt: Callable[[], T], progress: Callable[[], int] = lambda: 0) -> T:
        """Run ``attempt`` until it succeeds; failures that made no progress count against the policy."""
        failures = 0
        while True:
            before = progress()
            try:
                return attempt()
            except _Transient as exc:
                failures = 1 if progress() > before else failures + 1
                if failures >= self.retry.attempts:
                    raise RegistryError(f"{what}: {exc} (gave up after {failures} attempts)") from None
                time.sleep(self.retry.delay(failures, exc.retry_after))

    def _request(self, method: str, path: str, scope: str,
                 headers: dict[str, str] | None = None) -> Response:
        """One request with authentication; raises _Transient for what is worth retrying."""
        url = self._base_url() + path
        response = self._send(method, url, headers or {}, self._authorization(scope))
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if challenge:
                response.close()
                self._challenge = challenge
                scope = challenge.params.get("scope", scope) if challenge.scheme == "bearer" else scope
                response = self._send(method, url, headers or {}, self._authorization(scope, refresh=True))
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise _Transient(f"registry answered HTTP {response.status_code}", _retry_after(response))
        return response

    def _authorization(self, scope: str, refresh: bool = False) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "bearer":
            return self._tokens.header(challenge, scope, refresh)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise AuthError(f"{self.host} requires credentials: use --creds USER:PASS or an auth file")
            return basic_header(self._credentials)
        raise AuthError(f"{self.host} wants unsupported authentication scheme {challenge.scheme!r}")

    def _send(self, method: str, url: str, headers: dict[str, str], authorization: str | None) -> Response:
        """Send, following redirects ourselves so ``Authorization`` never leaves the registry host."""
        for _ in range(MAX_REDIRECTS + 1):
            netloc = URL(url).netloc
            sent = {**headers, "Authorization": authorization} if authorization and netloc == self.host else headers
            try:
                response = self._http.request(method, url, sent)
            except TLSError as exc:
                raise RegistryError(f"TLS with {netloc} failed ({exc}); if you trust this registry, "
                                    "use --tls-verify=false or mark it insecure in the config") from None
            except ProxyError as exc:
                raise RegistryError(f"cannot reach {netloc}: {exc}") from None
            except HTTPError as exc:
                raise _Transient(f"cannot reach {netloc} ({exc})") from None
            location = response.headers.get("Location")
            if response.status_code not in (301, 302, 303, 307, 308) or not location:
                return response
            response.close()
            url = _redirect_target(url, location, self.host)
        raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    def _base_url(self) -> str:
        """``https://host`` or, for an insecure registry without TLS, ``http://host``."""
        with self._base_lock:
            if self._base is None:
                self._base = self._retrying(f"registry {self.host}", self._probe)
            return self._base

    def _probe(self) -> str:
        """Find the scheme: HTTPS, or for an insecure registry plain HTTP first, then HTTPS.

        Trying HTTP first on insecure hosts (which may use it anyway) saves a failed TLS
        handshake on the common local registry; a TLS-only server answers plain HTTP
        with 400, which sends us on to HTTPS.
        """
        schemes = ["http", "https"] if self.insecure else ["https"]
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            last = scheme == schemes[-1]
            try:
                response = self._send("GET", base + "/v2/", {}, None)
            except (_Transient, RegistryError):
                if last:
                    raise
                continue
            response.close()
            if response.status_code == 401:
                self._challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            elif response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"registry answered HTTP {response.status_code}", _retry_after(response))
            elif response.status_code != 200:
                if not last:
                    continue
                raise RegistryError(f"{base} is not a registry (GET /v2/ answered HTTP {response.status_code})")
            return base
        raise AssertionError("unreachable")


def _redirect_target(url: str, location: str, host: str) -> str:
    """Where a redirect from ``url`` leads; RegistryError (not worth retrying) when that is not a
    usable http(s) URL."""
    from urllib.parse import urljoin  # only redirects need it
    target = urljoin(url, location)
    try:
        URL(target)
    except HTTPError as exc:
        raise RegistryError(f"{host} redirected to an unusable URL: {exc}") from None
    return target


def _next_page(link: str) -> str | None:
    """The path and query of the ``rel="next"`` page in a ``Link`` header (RFC 8288), if any."""
    for value in link.split(","):
        target, _, params = value.partition(";")
        if target.strip().startswith("<") and "next" in params.replace('"', " ").split():
            url = target.strip()[1:-1]
            return url if url.startswith("/") else URL(url).target
    return None


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _resumes_at(response: Response, offset: int) -> bool:
    """True when the registry honoured our Range and continues at ``offset``."""
    if response.status_code != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _read_limited(response: Response, limit: int, what: str) -> bytes:
    chunks, total = [], 0
    try:
        for chunk in response.iter_content(CHUNK):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what}: manifest is larger than {limit} bytes")
            chunks.append(chunk)
    except HTTPError as exc:
        raise _Transient(f"connection broke while reading the manifest ({exc})") from None
    return b"".join(chunks)


def _manifest_digest(data: bytes, target: str, response: Response, what: str) -> str:
    """The manifest's digest; by-digest fetches and the registry's own header must agree with it."""
    if ":" in target:
        try:
            verify_bytes(data, target)
            return target
        except DigestMismatchError as exc:
            raise DigestMismatchError(f"{what}: registry sent a manifest that does not match: {exc}") from None
    digest = sha256_digest(data)
    claimed = response.headers.get("Docker-Content-Digest", "")
    if claimed.startswith("sha256:") and claimed != digest:
        raise DigestMismatchError(f"{what}: registry says the manifest is {claimed} but it hashes to {digest}")
    return digest


def _raise_for_status(response: Response, what: str) -> None:
    """Turn an unsuccessful answer into a one-line error that says what to do."""
    if response.status_code in (200, 206):
        return
    codes, message = _error_details(response)
    response.close()
    if response.status_code == 404 or "NAME_UNKNOWN" in codes or "MANIFEST_UNKNOWN" in codes:
        if "NAME_UNKNOWN" in codes:
            raise NotFoundError(f"{what}: repository not found")
        if "BLOB_UNKNOWN" in codes:
            raise NotFoundError(f"{what}: the registry does not have this blob")
        raise NotFoundError(f"{what}: not found (no such repository, tag or digest)")
    if response.status_code in (401, 403):
        raise AuthError(f"{what}: access denied ({message or 'unauthorized'}); "
                        "the repository may not exist, or needs credentials (--creds, --authfile)")
    raise RegistryError(f"{what}: registry answered HTTP {response.status_code}"
                        + (f": {message}" if message else ""))


def _error_details(response: Response) -> tuple[set[str], str]:
    try:
        errors = response.json().get("errors") or []
        return {e.get("code", "") for e in errors}, "; ".join(e.get("message", "") for e in errors if e)
    except (ValueError, AttributeError):
        return set(), ""
