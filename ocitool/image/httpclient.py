"""A small HTTP/1.1 client for registry traffic: kept-alive connections, streamed bodies, TLS, proxies.

A pull needs little of HTTP: GET with a few headers, bodies streamed in order, TLS, and the
proxy variables. requests and urllib3 give all that but cost ~90 ms to import (http.client,
email, ssl, charset_normalizer...), more than half of what a cold ``ocitool run`` may take.
This client loads only CPython's ``_socket`` for plain HTTP, and ``ssl`` at the first HTTPS
connection. It never follows redirects itself: the registry client does, to keep
``Authorization`` on the registry's own host.

Proxies follow the usual variables: ``https_proxy``/``HTTPS_PROXY`` for HTTPS (a ``CONNECT``
tunnel), ``http_proxy``/``HTTP_PROXY`` for plain HTTP, ``no_proxy``/``NO_PROXY`` for exceptions
(host suffixes, ``*`` for all). Loopback hosts never go through a proxy. Trusted CAs are the
system's, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (OpenSSL's variables).
"""

from __future__ import annotations

import _socket
import base64
import os
import threading

from ocitool import cjson
from ocitool.config import is_loopback_host

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
MAX_LINE = 64 * 1024         # one status or header line
MAX_HEADERS = 256
MAX_IDLE = 16                # kept-alive connections per client
_RECV = 256 * 1024
_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))  # would end or split a request line or field


def _is_number(text: str, digits: frozenset[str] = frozenset("0123456789")) -> bool:
    """ASCII digits only: no sign, space, underscore or other scripts' digits, which int() accepts."""
    return bool(text) and all(c in digits for c in text)


class HTTPError(Exception):
    """No answer: the connection failed or broke, or the peer does not speak HTTP/1.1."""


class TLSError(HTTPError):
    """The TLS handshake failed, usually on a certificate that is not trusted."""


class ProxyError(HTTPError):
    """The proxy variables name an unusable proxy, or the proxy refused the tunnel."""


class URL:
    """An ``http``/``https`` URL split into what a request needs."""

    __slots__ = ("scheme", "netloc", "host", "port", "target", "username", "password")

    def __init__(self, text: str):
        if " " in text or _CONTROL.intersection(text):
            raise HTTPError(f"URL with spaces or control characters: {text[:80]!r}")
        scheme, sep, rest = text.partition("://")
        self.scheme = scheme.lower()
        if not sep or self.scheme not in ("http", "https"):
            raise HTTPError(f"not an http or https URL: {text!r}")
        rest = rest.partition("#")[0]
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:end], rest[end:]
        self.target = target if target.startswith("/") else "/" + target
        userinfo, _, self.netloc = authority.rpartition("@")
        user, _, password = userinfo.partition(":")
        self.username, self.password = (user, password) if userinfo else (None, None)
        self.host, self.port = _split_host_port(self.netloc, 443 if self.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        """``host[:port]`` as the Host header wants it (the port only when not the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, the port always given, as ``CONNECT`` wants it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):  # an IPv6 literal
        host, _, port = hostport[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and not (_is_number(port) and 0 < int(port) < 65536)):
        raise HTTPError(f"bad host or port in URL: {hostport!r}")
    return host.lower(), int(port) if port else default_port


class Headers:
    """Response headers, looked up case-insensitively; repeated fields are joined with ``, ``."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]):
        self._fields: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            self._fields[key] = f"{self._fields[key]}, {value}" if key in self._fields else value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._fields


class _Connection:
    """One socket with a read buffer; reusable for the next request once a body is read to its end."""

    __slots__ = ("sock", "key", "_buffer")

    def __init__(self, sock: Any, key: tuple[str, str, int]):
        self.sock = sock
        self.key = key
        self._buffer = b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise HTTPError(_os_reason(exc)) from None

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, at least one unless the peer closed the connection."""
        if self._buffer:
            data, self._buffer = self._buffer[:limit], self._buffer[limit:]
            return data
        return self._recv(limit)

    def read_line(self) -> bytes:
        """One CRLF- (or LF-) terminated line without its ending."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise HTTPError("an HTTP header line is too long")
            data = self._recv()
            if not data:
                raise HTTPError("Connection closed without an answer" if not self._buffer
                                else "Connection broken in the middle of a line")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.removesuffix(b"\r")

    def _recv(self, limit: int = _RECV) -> bytes:
        try:
            return self.sock.recv(limit)
        except OSError as exc:
            raise HTTPError(_os_reason(exc)) from None

    def read_head(self) -> tuple[int, list[tuple[str, str]], bool]:
        """The status code and header fields of the next answer (interim 1xx answers skipped), and
        whether it is HTTP/1.1 (whose connections stay open unless they say otherwise)."""
        while True:
            http11, status = _status(self.read_line())
            fields = self.read_fields()
            if not 100 <= status < 200:
                return status, fields, http11

    def read_fields(self) -> list[tuple[str, str]]:
        """Header (or trailer) fields up to the empty line."""
        fields: list[tuple[str, str]] = []
        while line := self.read_line():
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip() or len(fields) >= MAX_HEADERS:
                raise HTTPError(f"malformed HTTP header {line[:80]!r}")
            fields.append((name, value.strip()))
        return fields

    def close(self) -> None:
        self.sock.close()


def _status(line: bytes) -> tuple[bool, int]:
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit() or rest[3:4] not in (b"", b" "):
        raise HTTPError(f"not an HTTP/1.x answer: {line[:80]!r}")
    return version != b"HTTP/1.0", int(code)


def _os_reason(exc: OSError) -> str:
    """``Connection refused``, ``timed out``...: the C library's words without the errno prefix."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or exc.__class__.__name__


class Response:
    """A status, headers and a body read as it arrives; ``close`` it unless the body was read to the end."""

    def __init__(self, client: Client, connection: _Connection, status: int, headers: Headers, has_body: bool,
                 http11: bool = True):
        self.status_code = status
        self.headers = headers
        self._client = client
        tokens = (headers.get("Connection") or "").lower().replace(" ", "").split(",")
        self._persistent = "close" not in tokens and (http11 or "keep-alive" in tokens)
        self._connection: _Connection | None = connection
        self._content: bytes | None = None
        chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        self._chunked = has_body and chunked
        self._until_close = has_body and not chunked and length is None
        self._left = 0 if not has_body or chunked or length is None else _content_length(length)
        if not (self._chunked or self._until_close or self._left):
            self._release()

    def iter_content(self, size: int) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes; HTTPError when the connection breaks first."""
        while chunk := self.read_chunk(size):
            yield chunk

    def read_chunk(self, size: int) -> bytes:
        """The next piece of the body, b"" at its end."""
        connection = self._connection
        if connection is None:
            return b""
        try:
            return self._read_chunk(connection, size)
        except HTTPError:
            self._finish(reusable=False)
            raise

    def _read_chunk(self, connection: _Connection, size: int) -> bytes:
        if self._chunked and not self._left:
            self._left = self._next_chunk_size(connection)
            if not self._left:
                connection.read_fields()  # trailers
                self._release()
                return b""
        data = connection.read_some(min(size, self._left) if not self._until_close else size)
        if not data:
            if self._until_close:
                self._finish(reusable=False)
                return b""
            raise HTTPError("Connection broken: the body ended early")
        if not self._until_close:
            self._left -= len(data)
            if not self._left:
                if self._chunked:
                    if connection.read_line():
                        raise HTTPError("malformed chunked body")
                else:
                    self._release()
        return data

    @staticmethod
    def _next_chunk_size(connection: _Connection) -> int:
        size = connection.read_line().partition(b";")[0].strip().decode("latin-1")
        if not _is_number(size, _HEX):
            raise HTTPError(f"malformed chunk size {size[:20]!r}")
        return int(size, 16)

    @property
    def content(self) -> bytes:
        """The whole body (read once, then kept)."""
        if self._content is None:
            self._content = b"".join(self.iter_content(_RECV))
        return self._content

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return cjson.loads(self.content)

    def close(self) -> None:
        """Be done with the answer. The rest of a short body is read so that the connection can carry
        the next request; any other unread body costs the connection."""
        if self._connection is None:
            return
        if not self._chunked and not self._until_close and self._left <= _RECV:
            try:
                self.content
                return
            except HTTPError:
                pass
        self._finish(reusable=False)

    def _release(self) -> None:
        self._finish(reusable=self._persistent)

    def _finish(self, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client.give_back(connection, reusable)


def _content_length(value: str) -> int:
    first = value.partition(",")[0].strip()  # identical repeated fields were joined
    if not _is_number(first):
        raise HTTPError(f"bad Content-Length {value[:40]!r}")
    return int(first)


class Client:
    """Sends requests and keeps connections alive for reuse; safe to share between threads.

    ``verify=False`` accepts any TLS certificate (for registries marked insecure).
    """

    def __init__(self, verify: bool = True, timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)):
        self.verify = verify
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._tls: Any = None

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> Response:
        """Send one request without a body and return the answer once its headers are in."""
        target = URL(url)
        proxy = proxy_for(target)
        lines = [f"{method} {target.target if proxy is None or target.scheme == 'https' else url} HTTP/1.1",
                 f"Host: {target.authority}", "Accept-Encoding: identity", "User-Agent: ocitool"]
        if proxy is not None and target.scheme == "http" and proxy.username is not None:
            lines.append(f"Proxy-Authorization: {_proxy_authorization(proxy)}")
        for name, value in (headers or {}).items():
            if _CONTROL.intersection(name) or _CONTROL.intersection(value):
                raise HTTPError(f"header {name!r} has a line break or control character")
            lines.append(f"{name}: {value}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        response = self._send(target, proxy, method, message)
        if proxy is not None and response.status_code == 407:  # only plain HTTP gets here: see _tunnel
            response.close()
            raise ProxyError(f"proxy {proxy.address} refused the request (HTTP 407): give its credentials "
                             f"in the proxy URL, http://USER:PASSWORD@{proxy.address}")
        return response

    def _send(self, target: URL, proxy: URL | None, method: str, message: bytes) -> Response:
        key = (target.scheme, target.host, target.port)
        connection = self._take_idle(key)
        if connection is not None:
            try:
                return self._exchange(connection, method, message)
            except HTTPError:  # a kept-alive connection the server had closed meanwhile: try a new one
                connection.close()
        connection = self._open(target, proxy, key)
        try:
            return self._exchange(connection, method, message)
        except HTTPError:
            connection.close()
            raise

    def _exchange(self, connection: _Connection, method: str, message: bytes) -> Response:
        connection.send(message)
        status, fields, http11 = connection.read_head()
        has_body = method != "HEAD" and status not in (204, 304)
        return Response(self, connection, status, Headers(fields), has_body, http11)

    def give_back(self, connection: _Connection, reusable: bool) -> None:
        """Keep ``connection`` for the next request to its server, or close it."""
        with self._lock:
            if reusable and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):
                if self._idle[index].key == key:
                    return self._idle.pop(index)
        return None

    def _open(self, target: URL, proxy: URL | None, key: tuple[str, str, int]) -> _Connection:
        via = proxy or target
        sock = _connect(via.host, via.port, self.timeout[0], proxy is not None)
        try:
            if proxy is not None and target.scheme == "https":
                _tunnel(_Connection(sock, key), target, proxy)
            if target.scheme == "https":
                sock = self._wrap_tls(sock, target.host)
            sock.settimeout(self.timeout[1])
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, key)

    def _wrap_tls(self, sock: Any, host: str) -> Any:
        import ssl  # ~20 ms to import: only HTTPS needs it
        if self._tls is None:
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        try:
            return self._tls.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(f"certificate verify failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise TLSError(exc.reason or str(exc)) from None
        except OSError as exc:
            raise HTTPError(_os_reason(exc)) from None


def _connect(host: str, port: int, timeout: float, proxy: bool) -> Any:
    """A TCP connection to the first address of ``host`` that answers (a ``proxy``: errors say so)."""
    where = f"proxy {host}:{port}: " if proxy else ""
    try:
        # an ASCII name as bytes: a str makes getaddrinfo load the idna codec (~1 ms)
        addresses = _socket.getaddrinfo(host.encode() if host.isascii() else host, port, 0, _socket.SOCK_STREAM)
    except OSError as exc:
        raise HTTPError(f"{where}{exc.strerror or exc} ({host})") from None
    failure = "no address"
    for family, kind, proto, _, address in addresses:
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            failure = _os_reason(exc)
    raise HTTPError(where + failure)


def _tunnel(connection: _Connection, target: URL, proxy: URL) -> None:
    """Ask the proxy for a ``CONNECT`` tunnel to ``target``'s host and port."""
    lines = [f"CONNECT {target.address} HTTP/1.1", f"Host: {target.address}"]
    if proxy.username is not None:
        lines.append(f"Proxy-Authorization: {_proxy_authorization(proxy)}")
    connection.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    status, _, _ = connection.read_head()
    if status != 200:
        raise ProxyError(f"proxy {proxy.address} refused a tunnel to {target.address} (HTTP {status})")


def basic_authorization(username: str, password: str) -> str:
    """An ``Authorization`` (or ``Proxy-Authorization``) value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _proxy_authorization(proxy: URL) -> str:
    from urllib.parse import unquote  # the proxy URL's credentials are percent-encoded
    return basic_authorization(unquote(proxy.username or ""), unquote(proxy.password or ""))


def proxy_for(target: URL) -> URL | None:
    """The proxy the environment names for ``target``, or None to connect directly."""
    if is_loopback_host(target.host) or _no_proxy(target):
        return None
    name = f"{target.scheme}_proxy"
    value = os.environ.get(name) or os.environ.get(name.upper())
    if not value:
        return None
    if "://" in value and not value.lower().startswith("http://"):
        raise ProxyError(f"{name}={value}: only http:// proxies are supported")
    try:
        return URL(value if "://" in value else "http://" + value)
    except HTTPError as exc:
        raise ProxyError(f"{name}={value}: {exc}") from None


def _no_proxy(target: URL) -> bool:
    value = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    for entry in value.replace(" ", "").lower().split(","):
        host, _, port = entry.lstrip(".").partition(":")
        if entry == "*" or (host and (target.host == host or target.host.endswith("." + host))
                            and (not port or port == str(target.port))):
            return True
    return False
