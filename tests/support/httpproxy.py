"""A forward HTTP proxy for tests: absolute-form requests for plain HTTP, CONNECT tunnels for HTTPS.

ocitool's HTTP client honours ``http_proxy``/``https_proxy``; these tests check what it sends
to a proxy (request target, Host, Proxy-Authorization) and that traffic really flows through it.
Every request is recorded in ``seen`` before anything else happens, so a test can assert on
requests the proxy refused too. ``hosts`` maps names to addresses the way /etc/hosts would, but
only for the proxy: the client cannot resolve ``*.invalid`` names (RFC 6761) itself, so a target
named that way proves that the proxy, not the client, made the connection. With ``credentials``
the proxy answers 407 to any request without the matching ``Proxy-Authorization``.
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from .serving import LoopbackServer


HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
RELAY_CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProxyRequest:
    """One request as the proxy received it; ``headers`` has lower-cased names."""

    method: str
    target: str
    headers: dict[str, str]


class HTTPProxy(LoopbackServer):
    """A threaded forward proxy on a free 127.0.0.1 port (``url``, ``port``)."""

    def __init__(self, hosts: dict[str, str] | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.hosts = dict(hosts or {})
        self.credentials = credentials
        self.seen: list[ProxyRequest] = []
        self.port = 0
        self.url = ""

    def start(self) -> "HTTPProxy":
        """Listen on a free loopback port in a background thread."""
        self.port = self.serve(_proxy_handler(self))
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def url_with_credentials(self, user: str, password: str) -> str:
        """``url`` with ``user:password@`` in it, as a proxy variable carries credentials
        (the caller percent-encodes anything special)."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def resolve(self, host: str) -> str:
        """The address to connect to for ``host``: its ``hosts`` entry, else the name itself."""
        return self.hosts.get(host.lower(), host)

    def authorized(self, header: str | None) -> bool:
        """Whether ``header`` (a Proxy-Authorization value) satisfies ``credentials``, if any."""
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"


def _proxy_handler(proxy: HTTPProxy) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``proxy``'s hosts, credentials and record."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            """Record the request, demand credentials if configured, then tunnel or forward."""
            proxy.seen.append(ProxyRequest(self.command, self.path,
                                           {k.lower(): v for k, v in self.headers.items()}))
            if not proxy.authorized(self.headers.get("Proxy-Authorization")):
                self._answer(407, b"proxy credentials required\n",
                             {"Proxy-Authenticate": 'Basic realm="ocitool test proxy"'})
            elif self.command == "CONNECT":
                self._tunnel()
            elif self.path.startswith("http://"):
                self._forward()
            else:
                self._answer(400, b"a proxy wants absolute-form or CONNECT\n")

        do_GET = do_HEAD = do_CONNECT = handle_any  # noqa: N815 (http.server naming)

        def _tunnel(self) -> None:
            """Connect to the CONNECT target and relay raw bytes both ways until both sides close.

            The client must wait for our 200 before sending (ocitool's does): bytes it sent early
            would sit in ``rfile``'s buffer, which the relay does not read.
            """
            host, _, port = self.path.rpartition(":")
            try:
                upstream = socket.create_connection((proxy.resolve(host.strip("[]")), int(port)),
                                                    timeout=UPSTREAM_TIMEOUT)
            except (OSError, ValueError) as exc:
                self._answer(502, f"cannot reach {self.path}: {exc}\n".encode())
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            upstream.settimeout(None)
            self.connection.settimeout(None)
            back = threading.Thread(target=_relay, args=(upstream, self.connection), daemon=True)
            back.start()
            _relay(self.connection, upstream)
            back.join()
            upstream.close()
            self.close_connection = True

        def _forward(self) -> None:
            """Send an absolute-form request to its origin in origin-form and relay the answer.

            The answer's body is read whole and resent with Content-Length, so this side of the
            proxy keeps its connection alive whatever framing the origin used.
            """
            parts = urlsplit(self.path)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            origin = http.client.HTTPConnection(proxy.resolve(parts.hostname or ""), parts.port or 80,
                                                timeout=UPSTREAM_TIMEOUT)
            try:
                origin.putrequest(self.command, parts.path + (f"?{parts.query}" if parts.query else ""),
                                  skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    origin.putheader(key, value)
                origin.endheaders()
                answer = origin.getresponse()
                body = answer.read()
            except OSError as exc:
                self._answer(502, f"cannot reach {parts.netloc}: {exc}\n".encode())
                return
            finally:
                origin.close()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            """Answer the client ourselves with ``status`` and a short text body."""
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output quiet."""

    return Handler


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from ``source`` to ``sink`` until ``source`` ends, then end ``sink``'s direction."""
    try:
        while data := source.recv(RELAY_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
